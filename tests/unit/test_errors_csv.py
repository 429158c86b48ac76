"""The error CSV: original header and cells, exactly, plus `Failure Description`."""

from __future__ import annotations

from manifests.batch import Dialect
from manifests.errors_csv import encode_rows, failure_description
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
    header = result.batches[0].header
    data = b"".join(
        encode_rows(header, [(row.cells, row.problems) for row in batch.bad], Dialect(bom=False), first=n == 0)
        for n, batch in enumerate(result.batches)
    )
    assert data == (
        b"time_stamp,identity,id_phone,is_married,age,notes,Failure Description\r\n"
        b'1574668408,jane.doe@example.com,12345,N,22,"has, comma",id_phone: Phone number is not valid\r\n'
        b'1574668410,,\'+1,maybe,x,"quote "" and\nnewline","id_phone: Phone number is not valid; is_married: Value must'
        b" be a BOOLEAN: true, false, 1, 0, yes, no, y or n, found 'maybe'; age: Value must be an INTEGER: a whole number"
        b" from -2147483648 to 2147483647, found 'x'; At least one of identity / fbId / gpId / objectId is mandatory under 1024 chars"
        b' to identify the user"\r\n'
        b"1574668411,extra@example.com,'+918876543214,true,26,a,b,Row has 7 fields but the header has 6\r\n"
    )
    assert [row.line for row in result.bad] == [3, 5, 7]


def test_short_rows_are_padded_so_the_description_stays_last():
    data = encode_rows(["a", "b", "c"], [(["1"], [(None, "Row has 1 fields but the header has 3")])], first=True)
    assert data == b"\xef\xbb\xbfa,b,c,Failure Description\r\n1,,,Row has 1 fields but the header has 3\r\n"


def test_non_ascii_cells_round_trip():
    data = encode_rows(["identity", "Stadt"], [(["", "Zürich"], [(None, "x")])], first=True)
    assert data.decode("utf-8-sig") == "identity,Stadt,Failure Description\r\n,Zürich,x\r\n"


def test_the_error_csv_keeps_the_uploads_delimiter_and_encoding():
    rows = [(["a", "12,5"], [("P", "Value must be a FLOAT — a number")])]
    semicolon = encode_rows(["identity", "P"], rows, Dialect(delimiter=";"), first=True)
    assert (
        semicolon == "\ufeffidentity;P;Failure Description\r\na;12,5;P: Value must be a FLOAT — a number\r\n".encode()
    )
    latin = encode_rows(
        ["identity", "Stadt"], [(["a", "Zürich"], [(None, "x — y")])], Dialect(";", "cp1252"), first=True
    )
    assert latin == "identity;Stadt;Failure Description\r\na;Zürich;x — y\r\n".encode("cp1252")
    latin1 = encode_rows(["i"], [(["ü"], [(None, "x — y")])], Dialect(",", "iso8859-1", bom=False), first=False)
    assert latin1 == "ü,x ? y\r\n".encode("latin1")  # a character the encoding lacks becomes "?"
    utf16 = encode_rows(["i"], [(["é"], [])], Dialect("\t", "utf-16"), first=True)
    assert utf16.decode("utf-16") == "i\tFailure Description\r\né\t\r\n"
    later = encode_rows(["i"], [(["é"], [])], Dialect("\t", "utf-16"), first=False)
    assert later == "é\t\r\n".encode("utf-16-le")
