"""The error CSV: original header and cells, exactly, plus `Failure Description`."""

from __future__ import annotations

from manifests.errors_csv import ErrorCSVWriter, failure_description
from manifests.validate import BadRow
from tests.fixtures.engine import manifest, run

MIXED = (
    "time_stamp,identity,id_phone,is_married,age,notes\r\n"
    "1574668407,john.doe@example.com,+918876543211,Y,21,fine\r\n"
    '1574668408,jane.doe@example.com,12345,N,22,"has, comma"\r\n'
    "1574668409,john.roe@example.com,+918876543213,true,25,ok\r\n"
    '1574668410,,+1,maybe,x,"quote "" and\nnewline"\r\n'
    "1574668411,extra@example.com,+918876543214,true,26,a,b\r\n"
)
COLUMNS = {
    "time_stamp": {"ctName": "ts", "dataType": "INTEGER"},
    "id_phone": {"ctName": "Phone"},
    "is_married": {"ctName": "Married", "dataType": "BOOLEAN"},
    "age": {"ctName": "Age", "dataType": "INTEGER"},
}


def test_failure_description_joins_every_problem():
    assert failure_description([("id_phone", "Phone number is not valid"), (None, "Event name is mandatory")]) == (
        "id_phone: Phone number is not valid; Event name is mandatory"
    )
    assert failure_description([]) == ""


def test_error_csv_bytes_for_a_mixed_file(tmp_path):
    result = run(tmp_path, MIXED, manifest("profile", COLUMNS), batch_rows=2)
    assert [row["line"] for row in result.rows] == [2, 4]
    path = tmp_path / "errors.csv"
    with ErrorCSVWriter(path, result.batches[0].header) as writer:
        for batch in result.batches:
            writer.write(batch.bad)
    assert path.read_bytes() == (
        b"time_stamp,identity,id_phone,is_married,age,notes,Failure Description\r\n"
        b'1574668408,jane.doe@example.com,12345,N,22,"has, comma",id_phone: Phone number is not valid\r\n'
        b'1574668410,,\'+1,maybe,x,"quote "" and\nnewline","id_phone: Phone number is not valid; is_married: Value must'
        b" be a BOOLEAN: true, false, 1, 0, yes, no, y or n; age: Value must be an INTEGER: a whole number from"
        b" -2147483648 to 2147483647; At least one of identity / fbId / gpId / objectId is mandatory under 1024 chars"
        b' to identify the user"\r\n'
        b"1574668411,extra@example.com,'+918876543214,true,26,a,b,Row has 7 fields but the header has 6\r\n"
    )
    assert [row.line for row in result.bad] == [3, 5, 7]


def test_short_rows_are_padded_so_the_description_stays_last(tmp_path):
    path = tmp_path / "errors.csv"
    writer = ErrorCSVWriter(path, ["a", "b", "c"])
    writer.write([BadRow(2, ["1"], [(None, "Row has 1 fields but the header has 3")])])
    writer.close()
    assert path.read_bytes() == b"a,b,c,Failure Description\r\n1,,,Row has 1 fields but the header has 3\r\n"


def test_non_ascii_cells_round_trip(tmp_path):
    path = tmp_path / "errors.csv"
    with ErrorCSVWriter(path, ["identity", "Stadt"]) as writer:
        writer.write([BadRow(2, ["", "Zürich"], [(None, "x")])])
    assert path.read_bytes().decode("utf-8") == "identity,Stadt,Failure Description\r\n,Zürich,x\r\n"
