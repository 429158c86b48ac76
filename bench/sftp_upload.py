"""Upload throughput of ingestd's SFTP server next to OpenSSH's sshd (internal-sftp), same client, same run."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.daemon import Daemon, daemon_env

ROOT = Path(__file__).resolve().parent.parent
# The daemon runs in the harness's temp folder: this checkout's code, as when it ran in the caller's folder.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

USAGE = """
Prints MB/s for one big file and files/s for many small ones, for both servers, and the ratio
ingestd / sshd. The client is OpenSSH `sftp` with its default options (cipher, buffer size, requests in
flight); only the port, key and host-key checking are given. A private sshd is started on a free loopback
port (openssh-server is installed with apt-get when missing).

    python bench/sftp_upload.py                    # 1 GiB + 1,000 x 100 KiB, 3 rounds
    python bench/sftp_upload.py --size 256MiB --files 200 --rounds 1
    python bench/sftp_upload.py --clients 8        # 8 clients at once, each its own account: 128 MiB each,
                                                   # then 100 x 100 KiB each
    python bench/sftp_upload.py --processes 1      # ingestd with one SFTP process (default: one per core)

With --clients N, N OpenSSH sftp clients run at once against each server (each its own account on ingestd,
its own folder on sshd); the time is from the first start to the last end, the rate is over all of them.
"""

SIZE_UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(KiB|MiB|GiB)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size like 256MiB or 1GiB, found {text!r}")
    return int(match.group(1)) * SIZE_UNITS.get(match.group(2) or "", 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_sshd() -> str:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.path.exists(candidate):
            return candidate
    print("sshd not found: installing openssh-server", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "openssh-server"], check=True, env=env)
    return "/usr/sbin/sshd"


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port} within {timeout}s")


class Server:
    name = ""
    port = 0
    user = ""
    upload_dir = Path()
    process: subprocess.Popen[bytes] | None = None

    def client(self, number: int) -> tuple[str, str, Path]:
        """For --clients: client `number`'s (user, remote folder to put into, local folder its files land in)."""
        folder = self.upload_dir / f"c{number}"
        folder.mkdir(exist_ok=True)
        return self.user, f"{folder}/", folder

    def cpu_seconds(self) -> float:
        """CPU used so far by the server and its live descendants (ingestd's SFTP process included)."""
        own, descendants = self.cpu_split()
        return own + descendants

    def cpu_split(self) -> tuple[float, float]:
        """CPU used so far by the server's own process, and by its live descendants."""
        assert self.process is not None
        stats: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # exited meanwhile
        tree, own, descendants = {self.process.pid}, 0.0, 0.0
        for pid in sorted(stats):  # children have larger pids than their parents, nearly always
            if pid in tree or int(stats[pid][1]) in tree:
                tree.add(pid)
                ticks = sum(int(value) for value in stats[pid][11:13])
                if pid == self.process.pid:
                    own += ticks
                else:
                    descendants += ticks
        hertz = os.sysconf("SC_CLK_TCK")
        return own / hertz, descendants / hertz

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(30)


class OpenSSHServer(Server):
    """sshd -D on a free port, public-key auth for the current user, internal-sftp only."""

    name = "openssh"

    def __init__(self, work: Path, client_public: Path) -> None:
        sshd = find_sshd()
        self.port = free_port()
        self.user = os.environ.get("USER") or __import__("getpass").getuser()
        self.upload_dir = work / "sshd-uploads"
        self.upload_dir.mkdir()
        host_key = work / "sshd_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        authorized = work / "authorized_keys"
        shutil.copy(client_public, authorized)
        config = work / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {work / 'sshd.pid'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "Subsystem sftp internal-sftp",
                    "ForceCommand internal-sftp",
                    "",
                ]
            )
        )
        # sshd insists on an absolute path and on its privilege-separation directory.
        Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None
        self.process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
        wait_port(self.port, self.process, "sshd")


# --sftp-only: the SFTP listener alone, to tell its cost from the rest of the daemon's (watcher, workers).
SFTP_ONLY = """
import asyncio, signal
from daemon.config import load_config
from daemon.logs import setup_logging
from daemon.sftp.listener import SFTPListener
from daemon.store import StateDB

async def main():
    config = load_config()
    setup_logging(config.log.format, config.log.level)
    service = SFTPListener(config, StateDB(config.state_db))
    await service.start()
    print(f"  sftp   {service.host}:{service.port}", flush=True)
    print(f"  data   {config.data_dir}", flush=True)  # the end of the banner (tests/fixtures/daemon.py)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()

asyncio.run(main())
"""


class IngestdServer(Server):
    """`ingestd serve` (the whole daemon; tests/fixtures/daemon.py's harness) on a free port with the client's
    key registered for account 'bench'."""

    name = "ingestd"

    def __init__(
        self,
        work: Path,
        client_public: Path,
        sftp_only: bool = False,
        processes: int | None = None,
        clients: list[Path] | None = None,
    ) -> None:
        data = work / "ingestd-data"
        settings = {"INGESTD_SFTP__MAX_FILE_SIZE": "64GiB"}
        if processes is not None:
            settings["INGESTD_SFTP__PROCESSES"] = str(processes)
        self.daemon = Daemon(data, daemon_env(data, **settings))
        if sftp_only:
            self.daemon.command = (sys.executable, "-c", SFTP_ONLY)
        self.user = "bench"
        self.data = data
        cli = [sys.executable, "-m", "daemon.cli"]
        env = self.daemon.env
        subprocess.run([*cli, "keys", "add", "bench", str(client_public)], check=True, env=env, capture_output=True)
        for number, public in enumerate(clients or [], 1):  # --clients: one account each
            command = [*cli, "keys", "add", f"bench{number}", str(public)]
            subprocess.run(command, check=True, env=env, capture_output=True)
        self.upload_dir = data / "drop" / "bench"
        try:
            self.daemon.start(timeout=60)
        except RuntimeError as exc:
            raise SystemExit(f"ingestd serve did not start: {str(exc)[-2000:]}") from None
        self.process = self.daemon.process
        self.port = self.daemon.sftp_port
        self.banner = self.daemon.stdout()

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # killed if it hangs
            self.daemon.stop(timeout=30)

    def client(self, number: int) -> tuple[str, str, Path]:
        folder = self.data / "drop" / f"bench{number}"
        folder.mkdir(parents=True, exist_ok=True)
        return f"bench{number}", "", folder


# --stock-asyncssh: asyncssh's own SFTP server with nothing of ingestd (no temp files, checks, metrics or log
# lines), chrooted to one folder and offering the cipher ingestd offers: what asyncssh alone costs.
STOCK = """
import asyncio, os, signal, sys
import asyncssh

async def main():
    port, root, host_key, authorized = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    server = await asyncssh.listen(
        "127.0.0.1", int(port), server_host_keys=[host_key], authorized_client_keys=authorized,
        encryption_algs=["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"],
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root.encode()), allow_scp=False,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()

asyncio.run(main())
"""


class StockAsyncsshServer(Server):
    """A stock asyncssh SFTP server on a free port (reference only: no ratio target applies to it)."""

    name = "asyncssh"

    def client(self, number: int) -> tuple[str, str, Path]:
        folder = self.upload_dir / f"c{number}"
        folder.mkdir(exist_ok=True)
        return self.user, f"c{number}/", folder

    def __init__(self, work: Path, client_public: Path) -> None:
        self.port = free_port()
        self.user = "bench"
        self.upload_dir = work / "asyncssh-uploads"
        self.upload_dir.mkdir()
        host_key = work / "asyncssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        args = [str(self.port), str(self.upload_dir), str(host_key), str(client_public)]
        self.process = subprocess.Popen([sys.executable, "-c", STOCK, *args], stderr=subprocess.DEVNULL)
        wait_port(self.port, self.process, "asyncssh")


CLIENT_OPTIONS: list[str] = []  # --client-option: extra `-o` options for every sftp run (both servers)


def sftp_command(server: Server, key: Path, user: str = "", verbose: bool = False) -> list[str]:
    command = ["sftp", "-b", "-", "-P", str(server.port), "-i", str(key), "-o", "IdentitiesOnly=yes"]
    command += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
    command += [part for option in CLIENT_OPTIONS for part in ("-o", option)]
    if verbose:
        command.append("-v")
    command.append(f"{user or server.user}@127.0.0.1")
    return command


def sftp_many(server: Server, runs: list[tuple[str, Path, list[str]]]) -> float:
    """Run one OpenSSH sftp per (user, key, commands), all at once; seconds from the first start to the last end."""
    started = time.perf_counter()
    processes = []
    for user, key, commands in runs:
        process = subprocess.Popen(
            sftp_command(server, key, user),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None
        process.stdin.write("\n".join(commands) + "\n")
        process.stdin.close()
        processes.append(process)
    errors = [process.stderr.read() if process.stderr else "" for process in processes]
    codes = [process.wait() for process in processes]
    elapsed = time.perf_counter() - started
    for code, error in zip(codes, errors, strict=True):
        if code != 0:
            raise SystemExit(f"sftp to {server.name} failed: {error[-2000:]}")
    return elapsed


def sftp(server: Server, key: Path, commands: list[str], verbose: bool = False) -> tuple[float, str]:
    """Run OpenSSH sftp in batch mode; returns (seconds, stderr). Exits on failure."""
    command = sftp_command(server, key, verbose=verbose)
    started = time.perf_counter()
    result = subprocess.run(command, input="\n".join(commands) + "\n", capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"sftp to {server.name} failed: {result.stderr[-2000:]}")
    return elapsed, result.stderr


def clear(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            path.unlink()


def run_clients(
    args: argparse.Namespace,
    servers: list[Server],
    keys: list[Path],
    big: Path,
    small: Path,
    size: int,
    files: int,
) -> int:
    """--clients N: every client at once, the big file each, then the small files each; paired ratios."""
    big_rates: dict[str, list[float]] = {server.name: [] for server in servers}
    small_rates: dict[str, list[float]] = {server.name: [] for server in servers}
    cpu: dict[str, list[float]] = {server.name: [] for server in servers}
    for _ in range(args.rounds):
        for server in servers:  # interleaved, so background load affects both alike
            clients = [server.client(number) for number in range(1, len(keys) + 1)]
            runs = [(user, key, [f"put {big} {remote}"]) for (user, remote, _), key in zip(clients, keys, strict=True)]
            seconds = sftp_many(server, runs)
            for _, _, folder in clients:
                assert (folder / "big.bin").stat().st_size == size
                clear(folder)
            big_rates[server.name].append(len(keys) * size / seconds / 1e6)
            runs = [
                (user, key, [f"put {small}/* {remote}"]) for (user, remote, _), key in zip(clients, keys, strict=True)
            ]
            before = server.cpu_seconds()
            seconds = sftp_many(server, runs)
            cpu[server.name].append(server.cpu_seconds() - before)
            for _, _, folder in clients:
                assert len(list(folder.glob("f*.csv"))) == files
                clear(folder)
            small_rates[server.name].append(len(keys) * files / seconds)

    size_text = f"{size / 1024**2:.0f} MiB" if size < 1024**3 else f"{size / 1024**3:g} GiB"
    print(f"\n{len(keys)} OpenSSH sftp clients at once, each its own account; {args.rounds} round(s), median")
    print(f"{'':10}{f'{len(keys)} x 1 x {size_text}':>20}{f'{len(keys)} x {files} x {args.file_size // 1024} KiB':>24}")
    for server in servers:
        mbs = statistics.median(big_rates[server.name])
        fps = statistics.median(small_rates[server.name])
        print(f"{server.name:10}{mbs:>15.0f} MB/s{fps:>17.0f} files/s")
    paired_big = [i / o for i, o in zip(big_rates["ingestd"], big_rates["openssh"], strict=True)]
    paired_small = [i / o for i, o in zip(small_rates["ingestd"], small_rates["openssh"], strict=True)]
    print(
        f"{'paired':10}{statistics.median(paired_big):>20.2f}{statistics.median(paired_small):>24.2f}"
        "   (ingestd / openssh, median of each round's ratio, target >= 0.90; rounds: "
        f"big {' '.join(f'{r:.2f}' for r in paired_big)}, small {' '.join(f'{r:.2f}' for r in paired_small)})"
    )
    print(f"ingestd CPU: {statistics.median(cpu['ingestd']):.2f} s for the small files (median, all its processes)")
    return 0


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="big file size (default 1GiB)")
    parser.add_argument("--files", type=int, default=1000, help="number of small files (default 1000)")
    parser.add_argument("--file-size", type=parse_size, default=parse_size("100KiB"), help="small file size")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement; the median is shown")
    parser.add_argument("--sftp-only", action="store_true", help="run only ingestd's SFTP component, not serve")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put files (default: a temp dir)")
    parser.add_argument(
        "--stock-asyncssh", action="store_true", help="also measure a plain asyncssh SFTP server, for reference"
    )
    parser.add_argument("--clients", type=int, default=0, help="N clients at once, each its own account")
    parser.add_argument(
        "--client-size", type=parse_size, default=parse_size("128MiB"), help="with --clients: big file per client"
    )
    parser.add_argument("--client-files", type=int, default=100, help="with --clients: small files per client")
    parser.add_argument(
        "--processes", type=int, default=None, help="ingestd's sftp.processes (default: its own, one per core)"
    )
    parser.add_argument(
        "--client-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="an ssh -o option for the client, e.g. Ciphers=aes128-ctr (default: none, the client's defaults)",
    )
    args = parser.parse_args()
    CLIENT_OPTIONS.extend(args.client_option)

    work = Path(tempfile.mkdtemp(prefix="ingestd-bench-", dir=args.workdir))
    servers: list[Server] = []
    try:
        key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        client_keys = [work / f"id_client{number}" for number in range(1, args.clients + 1)]
        for client_key in client_keys:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)], check=True)
        authorized = work / "authorized.pub"  # sshd's and stock asyncssh's: every client's key
        authorized.write_text("".join(k.with_suffix(".pub").read_text() for k in [key, *client_keys]))
        size, files = (args.client_size, args.client_files) if args.clients else (args.size, args.files)
        big = work / "big.bin"
        with open(big, "wb") as handle:  # incompressible, written in chunks to keep memory flat
            chunk = os.urandom(8 * 1024**2)
            for offset in range(0, size, len(chunk)):
                handle.write(chunk[: min(len(chunk), size - offset)])
        small = work / "small"
        small.mkdir()
        payload = os.urandom(args.file_size)
        for index in range(files):
            (small / f"f{index:05d}.csv").write_bytes(payload)

        servers = [
            OpenSSHServer(work, authorized),
            IngestdServer(
                work,
                key.with_suffix(".pub"),
                args.sftp_only,
                args.processes,
                [k.with_suffix(".pub") for k in client_keys],
            ),
        ]
        if args.stock_asyncssh:
            servers.append(StockAsyncsshServer(work, authorized))
        for server in servers:
            _, log = sftp(server, key, ["pwd"], verbose=True)
            # The last key exchange's: ingestd re-keys clients that can onto AES-GCM after login.
            ciphers = re.findall(r"kex: client->server cipher: (\S+) MAC: (\S+)", log)
            cipher, mac = ciphers[-1] if ciphers else ("?", "?")
            chain = " -> ".join(found[0] for found in ciphers) if len(ciphers) > 1 else cipher
            print(f"{server.name:8} port {server.port}  cipher {chain}  MAC {mac}")
        ingestd = servers[1]
        processes = re.search(r"\((\d+) processes\)", getattr(ingestd, "banner", ""))
        print(f"ingestd SFTP processes: {processes.group(1) if processes else 1}")
        print(f"load average at start: {load_average()}  (the figures are only comparable on a quiet machine)")
        if args.clients:
            return run_clients(args, servers, client_keys, big, small, size, files)

        big_rates: dict[str, list[float]] = {server.name: [] for server in servers}
        small_rates: dict[str, list[float]] = {server.name: [] for server in servers}
        big_cpu: dict[str, list[float]] = {server.name: [] for server in servers}
        small_cpu: dict[str, list[float]] = {server.name: [] for server in servers}
        small_sftp_cpu: list[float] = []  # ingestd's SFTP process alone: serve's child, or --sftp-only's own
        sftp_part = 0 if args.sftp_only else 1
        for _ in range(args.rounds):
            for server in servers:  # interleaved, so background load affects both alike
                target = {"ingestd": "", "asyncssh": " big.bin"}.get(server.name, f" {server.upload_dir}/big.bin")
                cpu = server.cpu_seconds()
                seconds, _ = sftp(server, key, [f"put {big}{target}"])
                big_cpu[server.name].append(server.cpu_seconds() - cpu)
                assert (server.upload_dir / "big.bin").stat().st_size == args.size
                big_rates[server.name].append(args.size / seconds / 1e6)
                clear(server.upload_dir)
                target = {"ingestd": "", "asyncssh": ""}.get(server.name, f" {server.upload_dir}/")
                cpu, sftp_cpu = server.cpu_seconds(), server.cpu_split()[sftp_part]
                seconds, _ = sftp(server, key, [f"put {small}/*{target}"])
                small_cpu[server.name].append(server.cpu_seconds() - cpu)
                if server.name == "ingestd":
                    small_sftp_cpu.append(server.cpu_split()[sftp_part] - sftp_cpu)
                assert len(list(server.upload_dir.glob("f*.csv"))) == args.files
                small_rates[server.name].append(args.files / seconds)
                clear(server.upload_dir)

        client = f"OpenSSH sftp client with {', '.join(args.client_option)}" if args.client_option else ""
        size = f"{args.size / 1024**2:.0f} MiB" if args.size < 1024**3 else f"{args.size / 1024**3:g} GiB"
        print(f"\n{client or 'OpenSSH sftp client defaults'}, {args.rounds} round(s), median; times include login")
        print(f"{'':10}{'1 x ' + size:>18}{f'{args.files} x {args.file_size // 1024} KiB':>22}")
        for server in servers:
            mbs = statistics.median(big_rates[server.name])
            fps = statistics.median(small_rates[server.name])
            print(f"{server.name:10}{mbs:>13.0f} MB/s{fps:>15.0f} files/s")
        ratio_big = statistics.median(big_rates["ingestd"]) / statistics.median(big_rates["openssh"])
        ratio_small = statistics.median(small_rates["ingestd"]) / statistics.median(small_rates["openssh"])
        print(f"{'ratio':10}{ratio_big:>18.2f}{ratio_small:>22.2f}   (ingestd / openssh, target >= 0.90)")
        # Each round's two runs came one after the other: their ratio cancels load that changes between rounds.
        paired_big = [i / o for i, o in zip(big_rates["ingestd"], big_rates["openssh"], strict=True)]
        paired_small = [i / o for i, o in zip(small_rates["ingestd"], small_rates["openssh"], strict=True)]
        print(
            f"{'paired':10}{statistics.median(paired_big):>18.2f}{statistics.median(paired_small):>22.2f}"
            "   (median of each round's ratio; rounds: "
            f"big {' '.join(f'{r:.2f}' for r in paired_big)}, small {' '.join(f'{r:.2f}' for r in paired_small)})"
        )
        if "asyncssh" in big_rates:
            stock_big = statistics.median(big_rates["asyncssh"]) / statistics.median(big_rates["openssh"])
            stock_small = statistics.median(small_rates["asyncssh"]) / statistics.median(small_rates["openssh"])
            print(f"{'stock':10}{stock_big:>18.2f}{stock_small:>22.2f}   (plain asyncssh / openssh, for reference)")
            print(f"asyncssh CPU: {statistics.median(small_cpu['asyncssh']):.2f} s for the small files")
        # sshd's sessions are short-lived processes that end before they can be measured: only ingestd's CPU.
        print(
            f"ingestd CPU: {statistics.median(big_cpu['ingestd']):.2f} s for the big file, "
            f"{statistics.median(small_cpu['ingestd']):.2f} s for the small files (median; steadier than wall time), "
            f"of which the SFTP process {statistics.median(small_sftp_cpu):.2f} s"
        )
        return 0
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())
