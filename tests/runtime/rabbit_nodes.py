"""Private RabbitMQ nodes for tests that inject broker faults: one node, or a cluster of three.

The machine's shared broker (rabbit@localhost on 127.0.0.1:5672) is never stopped, restarted or
reconfigured by these tests. Every node made here has its own node name, AMQP and distribution ports,
data, log and cookie directory (under pytest's tmp dir), reads none of /etc/rabbitmq, and is stopped and
deleted by its fixture. Its server process carries OWNER_ENV=<pytest pid> in its environment, which is how
`reap_orphaned_nodes` recognises a node left behind by a pytest run that was killed; nothing without that
mark is ever signalled.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# Not /usr/sbin/rabbitmq-server: that wrapper switches to the rabbitmq user, who cannot enter pytest's tmp dir
# (/tmp/pytest-of-root is 0700); called directly, the node runs as the test's user.
SERVER = RABBITMQ_BIN / "rabbitmq-server"
CTL = RABBITMQ_BIN / "rabbitmqctl"
SHARED_NODE = "rabbit@localhost"
SHARED_PORTS = frozenset({4369, 5672, 25672, 15672, 35672})
OWNER_ENV = "INTEGRATION_TEST_RABBIT_OWNER"
START_TIMEOUT = 60
STOP_TIMEOUT = 60
VHOST = "hjerterehab"
CLUSTER_MARKER = "rabbit_cluster"

_handed_out: set[int] = set()


class NodeStartError(RuntimeError):
    """The node did not come up; the message's first line says why, the rest are excerpts of its log."""


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A TCP port nobody listens on or holds, below the ephemeral range (so no outgoing connection takes it
    between this check and the node's bind), not one of the shared broker's, not handed out before here."""
    for _ in range(500):
        port = random.randrange(low, high)
        if port in _handed_out or port in SHARED_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))  # no SO_REUSEADDR: even a TIME_WAIT on the port counts as taken
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"found no free TCP port in {low}..{high}")


def _base_env() -> dict[str, str]:
    """A minimal environment: nothing of the caller's RABBITMQ_*/ERL_* settings leaks into our nodes."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # Same as the shared node's rabbitmq-env.conf, in case ours is the node that has to start epmd.
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie not yet reaped by its (re-)parent is gone for our purposes


class RabbitNode:
    """One private RabbitMQ node (no plugins), listening on 127.0.0.1 only.

    `start()` returns once the node is booted and accepts AMQP connections, or raises NodeStartError;
    it may be called again after `stop()` or `kill()` (same name, ports and data: the node comes back
    with its durable state and, in a cluster, rejoins it).
    """

    def __init__(
        self,
        directory: Path,
        name: str | None = None,
        port: int | None = None,
        dist_port: int | None = None,
        cookie: str | None = None,
    ) -> None:
        self.name = name or f"t{uuid.uuid4().hex[:10]}@localhost"
        if self.name == SHARED_NODE:
            raise ValueError(f"{SHARED_NODE} is the machine's shared broker; a test node needs a name of its own")
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        if {self.port, self.dist_port} & SHARED_PORTS:
            raise ValueError(f"ports {self.port}/{self.dist_port} collide with the shared broker's")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pid_file = self.directory / f"{self.short_name}.pid"
        self.log_file = self.directory / "log" / f"{self.name}.log"
        self._booted_once = False
        self._write_config()
        self._write_cookie(cookie or "".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))

    @property
    def short_name(self) -> str:
        return self.name.split("@", 1)[0]

    def __repr__(self) -> str:
        return f"RabbitNode({self.name}, amqp={self.port}, dist={self.dist_port}, dir={self.directory})"

    def _write_config(self) -> None:
        d = self.directory
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n", encoding="utf-8"
        )
        (d / "env.conf").write_text("", encoding="utf-8")  # instead of /etc/rabbitmq/rabbitmq-env.conf
        (d / "enabled_plugins").write_text("[].\n", encoding="utf-8")

    def _write_cookie(self, cookie: str) -> None:
        """The Erlang cookie in the node's HOME (nodes of one cluster share it; rabbitmqctl reads it too)."""
        cookie_file = self.directory / ".erlang.cookie"
        if cookie_file.exists():
            cookie_file.chmod(0o600)
        cookie_file.write_text(cookie, encoding="ascii")
        cookie_file.chmod(0o400)

    @property
    def cookie(self) -> str:
        return (self.directory / ".erlang.cookie").read_text(encoding="ascii")

    def ctl_env(self) -> dict[str, str]:
        """The environment every rabbitmqctl/rabbitmq-* call for this node needs (HOME holds its cookie)."""
        return {**_base_env(), "HOME": str(self.directory), "RABBITMQ_CONF_ENV_FILE": str(self.directory / "env.conf")}

    def server_env(self) -> dict[str, str]:
        d = self.directory
        return {
            **self.ctl_env(),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_CRASH_DUMP": str(d / "erl_crash.dump"),
            OWNER_ENV: str(os.getpid()),
        }

    # -- life cycle ---------------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Boot the node; returns when it accepts AMQP connections. Raises NodeStartError (reason and log).

        If the very first boot fails because another process took one of the chosen ports in the meantime,
        it is retried once with new ports (later restarts keep their ports: tests hold URLs to them).
        """
        if self.is_running():
            return
        try:
            self._boot(timeout)
        except NodeStartError:
            if self._booted_once or "eaddrinuse" not in self._log_text():
                raise
            self.port, self.dist_port = free_port(), free_port()
            self._write_config()
            self._boot(timeout)
        self._booted_once = True

    def _boot(self, timeout: float) -> None:
        self.pid_file.unlink(missing_ok=True)  # `rabbitmqctl wait` would otherwise wait on a dead pid
        with (self.directory / "server.out").open("ab") as out:
            # -detached: the launcher exits at once and the beam process is re-parented; its output goes to a
            # file, never to a pipe of ours (a pipe kept open by the node would block us).
            launched = subprocess.run(
                [str(SERVER), "-detached"],
                env=self.server_env(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=30,
                check=False,
            )
        if launched.returncode != 0:
            raise NodeStartError(self._failure(f"rabbitmq-server -detached exited with {launched.returncode}"))
        self._await_pid_file(time.monotonic() + timeout)
        try:
            # `await_startup` returns too early right after -detached (the node is not registered in epmd yet);
            # `wait PIDFILE` waits for the pid file, then distribution, then the rabbit app.
            self.ctl("wait", str(self.pid_file), "--timeout", str(int(timeout)), timeout=timeout + 15)
            self._await_amqp(deadline=time.monotonic() + 15)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            self.kill()
            raise NodeStartError(self._failure(f"node did not finish booting ({last})")) from exc

    def _await_pid_file(self, deadline: float) -> None:
        """Wait for the node to write its pid file; fail fast if its process died before (it does so when,
        say, its config does not parse), and then boot it once in the foreground to capture why."""
        launched = time.monotonic()
        while not self.pid_file.exists():
            if time.monotonic() - launched > 3 and not self._beam_pids():
                self._diagnose_in_foreground()
                raise NodeStartError(self._failure("its process exited before writing its pid file"))
            if time.monotonic() > deadline:
                self.kill()
                raise NodeStartError(self._failure(f"no pid file {self.pid_file} after {deadline - launched:.0f} s"))
            time.sleep(0.2)

    def _beam_pids(self) -> list[int]:
        return [pid for pid, env in _test_beams() if env.get("RABBITMQ_NODENAME") == self.name]

    def _diagnose_in_foreground(self) -> None:
        """-detached sends the prelaunch's output to /dev/null; a foreground boot prints it (to server.out)."""
        with (self.directory / "server.out").open("ab") as out:
            child = subprocess.Popen(
                [str(SERVER)],
                env=self.server_env(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()

    def _await_amqp(self, deadline: float) -> None:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nothing accepts AMQP connections on 127.0.0.1:{self.port}") from None
                time.sleep(0.1)

    def _log_text(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _failure(self, reason: str) -> str:
        """One line saying why (with the first error found), then the log around that error and its tail."""
        lines = self._log_text().splitlines()
        server_out = self.directory / "server.out"
        output = server_out.read_text(errors="replace").splitlines() if server_out.exists() else []
        first_error = next((i for i, line in enumerate(lines) if "[error]" in line or "[critical]" in line), None)
        causes = [line.strip() for line in output if line.startswith("Error during startup:")]
        if first_error is not None:
            causes += [_erlang_term_at(lines, i) for i in range(first_error, len(lines)) if "reason:" in lines[i]]
            causes.append(lines[first_error].split("> ", 1)[-1].strip())
        if causes:
            reason = f"{reason}; first error: {causes[0]}"[:400]
        excerpt: list[str] = []
        if first_error is not None:
            excerpt += [f"--- first error in {self.log_file}"] + lines[first_error : first_error + 12]
        excerpt += [f"--- last lines of {self.log_file}"] + (lines[-12:] if lines else ["(empty or missing)"])
        if output:
            excerpt += ["--- rabbitmq-server output"] + output[-12:]
        body = "\n".join(line[:300] for line in excerpt)
        return f"RabbitMQ test node {self.name} (amqp port {self.port}) did not start: {reason}\n{body}"

    def pid(self) -> int | None:
        """The OS pid of the node's live beam process (found by its environment, not the pid file), or None."""
        pids = self._beam_pids()
        return pids[0] if pids else None

    def is_running(self) -> bool:
        """Whether the node's beam process is alive (not whether the rabbit application is up)."""
        return bool(self._beam_pids())

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Graceful stop (`rabbitmqctl stop`); returns once the OS process is gone. SIGKILL if that fails."""
        if not self.is_running():
            return
        args = ["stop", str(self.pid_file)] if self.pid_file.exists() else ["stop"]  # with it: waits for the exit
        try:
            self.ctl(*args, timeout=timeout)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        deadline = time.monotonic() + 10
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.kill()

    def kill(self) -> None:
        """Abrupt loss: SIGKILL the beam process (its children exit with it); returns once it is gone.

        Only a beam.smp whose environment names this node and carries OWNER_ENV is ever signalled."""
        pids = self._beam_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(not _process_gone(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"beam process {pids} of {self.name} survived SIGKILL for 10 s")
            time.sleep(0.05)

    def destroy(self) -> None:
        """Stop the node (kill if a graceful stop fails) and delete its directory."""
        try:
            self.stop()
        finally:
            try:
                self.kill()
            finally:
                shutil.rmtree(self.directory, ignore_errors=True)

    # -- talking to it ------------------------------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run `rabbitmqctl -n <this node> ARGS`; returns stdout, raises RuntimeError with stderr on failure."""
        return self.tool("rabbitmqctl", *args, timeout=timeout)

    def tool(self, tool: str, *args: str, timeout: float = 60) -> str:
        """Any CLI tool (rabbitmqctl, rabbitmq-queues, rabbitmq-diagnostics, ...) against this node."""
        if tool not in {"rabbitmqctl", "rabbitmq-queues", "rabbitmq-diagnostics", "rabbitmq-upgrade"}:
            raise ValueError(f"unknown RabbitMQ CLI tool {tool!r}")
        done = subprocess.run(
            [str(RABBITMQ_BIN / tool), "-n", self.name, *args],
            env=self.ctl_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise RuntimeError(f"{tool} -n {self.name} {' '.join(args)} failed: {' | '.join(detail[-6:])}")
        return done.stdout

    def url(self, vhost: str = VHOST, user: str = "guest", password: str = "guest") -> str:
        """amqp:// URL of this node for `vhost` (percent-encoded: "/" is the default vhost)."""
        return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    def add_vhost(self, vhost: str, user: str = "guest") -> None:
        """Create `vhost` (idempotent) and give `user` full permissions on it."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")


def _erlang_term_at(lines: list[str], index: int) -> str:
    """The `reason: ...` term on log line `index`, with its continuation lines (indented deeper) joined."""

    def message(line: str) -> str:
        return line.split("> ", 1)[-1]

    head = message(lines[index])
    indent = len(head) - len(head.lstrip())
    parts = [head.split("reason:", 1)[1].strip()]
    for line in lines[index + 1 : index + 8]:
        text = message(line)
        if len(text) - len(text.lstrip()) <= indent or not text.strip():
            break
        parts.append(text.strip())
    return "".join(parts)


def _environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _test_beams() -> Iterator[tuple[int, dict[str, str]]]:
    """(pid, environment) of every beam process started by this module (by any pytest run)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text(encoding="ascii").strip() != "beam.smp":
                continue
        except OSError:
            continue
        environ = _environ_of(int(entry.name))
        if environ.get(OWNER_ENV) and environ.get("RABBITMQ_NODENAME") != SHARED_NODE:
            if not _process_gone(int(entry.name)):
                yield int(entry.name), environ


def reap_orphaned_nodes() -> list[int]:
    """SIGKILL test nodes whose pytest process is gone (a run killed before its fixtures could stop them).

    Only beam processes whose environment carries OWNER_ENV naming a dead pid are touched; the shared
    broker and other live runs' nodes never carry such a mark. Returns the pids killed.
    """
    killed = []
    for pid, environ in _test_beams():
        owner = environ[OWNER_ENV]
        if owner.isdigit() and _process_gone(int(owner)):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


class RabbitCluster:
    """Three private nodes joined into one cluster (one Erlang cookie, all disc nodes).

    `start()` boots the three in parallel, then joins the 2nd and 3rd to the 1st (stop_app, reset,
    join_cluster, start_app); it returns when all three are running members. Quorum queues declared
    on it get all three nodes as members.
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = Path(directory)
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        tag = uuid.uuid4().hex[:6]
        self.nodes = [
            RabbitNode(self.directory / f"n{i + 1}", name=f"c{tag}n{i + 1}@localhost", cookie=cookie)
            for i in range(size)
        ]

    def __getitem__(self, index: int) -> RabbitNode:
        return self.nodes[index]

    def __iter__(self) -> Iterator[RabbitNode]:
        return iter(self.nodes)

    def start(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(node.start) for node in self.nodes]:
                future.result()
        first, joining = self.nodes[0], self.nodes[1:]
        with ThreadPoolExecutor(len(joining)) as pool:  # fresh nodes: stop_app and reset can run side by side
            for future in [pool.submit(lambda n=n: (n.ctl("stop_app"), n.ctl("reset"))) for n in joining]:
                future.result()
        for node in joining:  # one join at a time: concurrent schema changes on the first node can conflict
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        expected = {n.name for n in self.nodes}
        deadline = time.monotonic() + 30
        while (running := set(self.running_nodes())) != expected:
            if time.monotonic() > deadline:
                raise NodeStartError(f"cluster did not form: running {sorted(running)}, expected {sorted(expected)}")
            time.sleep(0.5)

    def running_nodes(self, via: RabbitNode | None = None) -> list[str]:
        """The cluster's running members as seen from `via` (default: the first node that is up)."""
        for node in [via] if via else [n for n in self.nodes if n.is_running()]:
            try:
                status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
            except (RuntimeError, json.JSONDecodeError):
                continue
            return sorted(status.get("running_nodes", []))
        return []

    def ctl(self, *args: str, node: int = 0, timeout: float = 60) -> str:
        return self.nodes[node].ctl(*args, timeout=timeout)

    def url(self, vhost: str = VHOST, node: int = 0) -> str:
        return self.nodes[node].url(vhost)

    def urls(self, vhost: str = VHOST) -> list[str]:
        return [n.url(vhost) for n in self.nodes]

    def ensure_running(self) -> None:
        """Start any node a test stopped or killed (it rejoins the cluster with its data)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(n.start) for n in self.nodes if not n.is_running()]:
                future.result()

    def destroy(self) -> None:
        """Stop all nodes (in parallel, kill if needed) and delete the cluster's directory."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            futures = [pool.submit(n.destroy) for n in self.nodes]
        errors = [f.exception() for f in futures if f.exception() is not None]
        shutil.rmtree(self.directory, ignore_errors=True)
        if errors:
            raise RuntimeError(f"stopping the test cluster failed: {errors[0]}")


class OwnBroker:
    """What `own_broker` yields: one private node with the vhost `hjerterehab` open to guest."""

    def __init__(self, node: RabbitNode) -> None:
        self.node = node

    def url(self, vhost: str = VHOST, user: str = "guest", password: str = "guest") -> str:
        return self.node.url(vhost, user, password)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        return self.node.ctl(*args, timeout=timeout)

    @property
    def port(self) -> int:
        return self.node.port


def _start_or_reason(start: Callable[[], object]) -> str | None:
    """Run `start`; the one-line reason (and log excerpt) if the node or a first rabbitmqctl call failed."""
    try:
        start()
    except RuntimeError as exc:  # NodeStartError, or a failing rabbitmqctl call
        return str(exc)
    return None


def _require_rabbitmq() -> None:
    if not SERVER.exists() or not CTL.exists():
        pytest.fail(f"RabbitMQ is not installed ({SERVER} missing); the broker fault tests start nodes of their own")
    reap_orphaned_nodes()


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    """One private RabbitMQ node for the module, with a fresh vhost `hjerterehab` open to guest.

    Tests may stop, kill and restart `.node`; the fixture stops and deletes it afterwards in any case.
    """
    _require_rabbitmq()
    node = RabbitNode(tmp_path_factory.mktemp("rabbit-node"))
    try:
        failure = _start_or_reason(lambda: (node.start(), node.add_vhost(VHOST)))
        if failure:
            pytest.fail(failure, pytrace=False)  # outside the except: no chained traceback in the report
        yield OwnBroker(node)
    finally:
        node.destroy()


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """A private three-node cluster for the module, with a fresh vhost `hjerterehab` open to guest.

    A test that stops or kills nodes should call `ensure_running()` when done if later tests of the
    module need all three; the fixture stops and deletes every node afterwards in any case.
    """
    _require_rabbitmq()
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster"))
    try:
        failure = _start_or_reason(lambda: (cluster.start(), cluster[0].add_vhost(VHOST)))
        if failure:
            pytest.fail(failure, pytrace=False)  # outside the except: no chained traceback in the report
        yield cluster
    finally:
        cluster.destroy()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{CLUSTER_MARKER}: starts a private 3-node RabbitMQ cluster (slow; select with -m {CLUSTER_MARKER})"
    )
