"""A run split across two "hosts": network namespaces joined by a veth pair, unicast discovery only.

The test builds the network itself (root / CAP_NET_ADMIN): namespaces A and B, a veth pair with
an address at each end (inside those namespaces only: the machine's own network is untouched),
IPv6 off (no router or neighbour multicast on the link) and a private ``/dev/shm`` per process
tree, so Fast DDS cannot fall back on shared memory between the "hosts" and every byte between
them crosses the link. Then:

- host A: ``mbrl-ros launch pal_dclaw role:=learner peers:=<B>`` (coordinator, model learner,
  policy improver);
- host B: ``role:=collectors num_collectors:=2 peers:=<A> coordinator_key:=<the learner's public
  key>``; collector_1 is SIGKILLed once it
  has published, mid-episode at full sim speed;
- host B, later: one more collector (``first_collector:=2``) once the game has deployed a new
  policy; it must receive the latest policy (TRANSIENT_LOCAL) and collect with it.

Checked: the game completes and every collector process leaves on its own; a packet counter
on the link sees unicast traffic and not one multicast frame; every episode the remote
collectors published is in the record exactly once (ids unique, sequences contiguous per
stream, each surviving collector's own count matches), the learner's ledger holds exactly
those, the killed collector lost nothing it had published; the late one got the policy deployed
when it joined, or a newer one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import pytest
import yaml

pytest.importorskip("rclpy")

from ros_harness import TINY_GAME, free_domain_id  # noqa: E402

from mbrl_ros import wire  # noqa: E402

pytestmark = pytest.mark.ros
TASK = {"task_id": "dclaw-turn-fixed", "obs_dim": 21, "act_dim": 9, "horizon": 40}
ROOT = Path(__file__).resolve().parent.parent

# Counts the frames on one interface (run inside a namespace): multicast / broadcast / unicast UDP.
SNIFFER = r"""
import json, signal, socket, sys
iface, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind((iface, 0)); s.settimeout(0.2)
c = {"frames": 0, "ipv4_multicast": 0, "ipv4_broadcast": 0, "ipv6": 0, "arp": 0, "udp_unicast_bytes": 0}
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
open(out + ".ready", "w").close()
while not stop:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    c["frames"] += 1
    et = int.from_bytes(f[12:14], "big")
    if et == 0x0800:
        dst = f[30:34]
        if 224 <= dst[0] <= 239:
            c["ipv4_multicast"] += 1
        elif dst[3] == 255:  # 255.255.255.255 or the /24's broadcast address
            c["ipv4_broadcast"] += 1
        elif f[23] == 17:
            c["udp_unicast_bytes"] += len(f)
    elif et == 0x86DD:
        c["ipv6"] += 1
    elif et == 0x0806:  # ARP (broadcast requests: how unicast IP finds the peer's MAC)
        c["arp"] += 1
json.dump(c, open(out, "w"))
"""


class TwoHosts:
    """Namespaces A and B joined by a veth pair; processes started in them are killed on close."""

    def __init__(self, tag: str) -> None:
        self.ns = {"A": f"mbrlA_{tag}", "B": f"mbrlB_{tag}"}
        self.dev = {"A": f"mva{tag}"[:15], "B": f"mvb{tag}"[:15]}
        octet = 1 + int(tag) % 250
        self.addr = {"A": f"10.213.{octet}.1", "B": f"10.213.{octet}.2"}
        self.procs: list[subprocess.Popen] = []
        self.created: list[str] = []

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)

    def up(self) -> None:
        for ns in self.ns.values():
            self._ip("netns", "add", ns)
            self.created.append(ns)
        self._ip("link", "add", self.dev["A"], "type", "veth", "peer", "name", self.dev["B"])
        for host, ns in self.ns.items():
            dev = self.dev[host]
            self._ip("link", "set", dev, "netns", ns)
            # no IPv6: its neighbour discovery and MLD reports would be multicast on the link
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                           check=True, capture_output=True, timeout=30)
            self._ip("-n", ns, "addr", "add", f"{self.addr[host]}/24", "dev", dev)
            self._ip("-n", ns, "link", "set", dev, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")

    def start(self, host: str, argv: list[str], log: Path, private_shm: bool = True) -> subprocess.Popen:
        """``argv`` in ``host``'s namespace (own session), with its own /dev/shm: no shared memory
        between the hosts, as between two machines."""
        wrap = ["ip", "netns", "exec", self.ns[host]]
        if private_shm:
            wrap += ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size=512m tmpfs /dev/shm && exec "$0" "$@"']
        f = open(log, "wb")
        p = subprocess.Popen(wrap + argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
        f.close()
        self.procs.append(p)
        return p

    def close(self) -> None:
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
            for p in self.procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
                time.sleep(0.1)
        for ns in self.created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture
def two_hosts():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CAP_NET_ADMIN)")
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    hosts = TwoHosts(str(os.getpid() % 100000))
    try:
        hosts.up()
    except (subprocess.CalledProcessError, OSError) as exc:
        hosts.close()
        err = getattr(exc, "stderr", "") or str(exc)
        pytest.skip(f"cannot create network namespaces / a veth pair here: {err.strip()}")
    probe = subprocess.run(["ip", "netns", "exec", hosts.ns["A"], "unshare", "--mount", "sh", "-c",
                            "mount -t tmpfs tmpfs /dev/shm"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        hosts.close()
        pytest.skip(f"cannot give a namespace its own /dev/shm: {probe.stderr.strip()}")
    try:
        yield hosts
    finally:
        hosts.close()


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _wait(predicate, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a launcher exited ({p.returncode}) while waiting for {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _episodes(mcap: Path) -> list[wire.EpisodeRecord]:
    from std_msgs.msg import UInt8MultiArray

    from mbrl_ros.nodes import TRANSITIONS
    from mbrl_ros.nodes.recording import read_ros_messages

    if not mcap.is_file():
        return []
    try:
        return [wire.unpack_episode(wire.from_msg(m), TASK) for m, _t in read_ros_messages(mcap, TRANSITIONS, UInt8MultiArray)]
    except Exception:  # noqa: BLE001 - the record is being written: read it again later
        return []


def _left(log: str) -> dict[str, int]:
    """stream -> episodes published, from the 'left the game' lines of collector logs."""
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"left the game: (\d+) episodes published \(stream (\S+),", log)}


def test_learner_and_collectors_on_two_hosts_unicast_only(two_hosts: TwoHosts, tmp_path: Path) -> None:
    hosts = two_hosts
    domain = free_domain_id()
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        # 2-episode rounds after an 80-sample start. The collectors run at the task's 10 Hz
        # (realtime:=true, 4 s an episode): the game then lasts long enough for a collector that
        # joins late to start and collect however fast the machine is; the watchdog is relaxed
        # because a loaded CI machine may wake a step late.
        "/**": {"ros__parameters": {"game_overrides": TINY_GAME + ["samples=800", "samples_per_iter=80"],
                                    "torch_threads": 1, "max_period_overrun_s": 1.0}},
        "game_coordinator": {"ros__parameters": {"gate_probe_size": 32, "gate_model_horizon": 3}},
    }))
    learner_dir, coll_dir, late_dir = tmp_path / "learner", tmp_path / "collectors", tmp_path / "late"
    sniff_out = tmp_path / "link.json"
    launch = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", f"domain_id:={domain}", f"config:={config}",
              "--no-progress", "--timeout", "400"]
    sniffer = hosts.start("A", [sys.executable, "-c", SNIFFER, hosts.dev["A"], str(sniff_out)], tmp_path / "sniff.log",
                          private_shm=False)
    _wait(lambda: Path(str(sniff_out) + ".ready").exists(), 30, "the packet counter", [sniffer])
    learner = hosts.start("A", launch + ["role:=learner", f"peers:={hosts.addr['B']}", f"log_dir:={learner_dir}"],
                          tmp_path / "learner.out")
    # the coordinator creates the run's signing key; the collectors get its public key as text
    # (as an operator pastes it from the learner's output), the late one as a copied file
    pub = learner_dir / "keys" / "coordinator_ed25519.pub"
    _wait(pub.is_file, 180, "the coordinator's public key", [learner])
    key = pub.read_text().strip()
    collectors = hosts.start("B", launch + ["role:=collectors", "num_collectors:=2", "realtime:=true", f"peers:={hosts.addr['A']}",
                                            f"log_dir:={coll_dir}", f"coordinator_key:={key}"], tmp_path / "collectors.out")
    copied = tmp_path / "coordinator.pub"
    copied.write_text(key + "\n")
    mcap = learner_dir / "record" / "transitions.mcap"
    late = None
    try:
        # collector_1 has published over the link: kill it (mid-episode at full sim speed, almost surely)
        _wait(lambda: "sim1" in {e.robot_id for e in _episodes(mcap)}, 240, "an episode of sim1 at the learner",
              [learner, collectors])
        pids = _read_json(coll_dir / "pids.json")
        os.kill(pids["collector_1"], signal.SIGKILL)
        # a collector joins late, once a policy newer than the first has been deployed
        _wait(lambda: ((_read_json(learner_dir / "game_state.json") or {}).get("deployed_policy_version", -1) >= 2),
              240, "policy v2 deployed", [learner, collectors])
        joined_at = _read_json(learner_dir / "game_state.json")["deployed_policy_version"]
        late = hosts.start("B", launch + ["role:=collectors", "num_collectors:=1", "first_collector:=2", "realtime:=true",
                                          f"peers:={hosts.addr['A']}", f"log_dir:={late_dir}", f"coordinator_key:={copied}"],
                           tmp_path / "late.out")
        learner.wait(timeout=420)
        collectors.wait(timeout=60)
        late.wait(timeout=60)
    finally:
        if sniffer.poll() is None:
            os.killpg(sniffer.pid, signal.SIGTERM)
            sniffer.wait(timeout=10)
    out = {name: (tmp_path / f"{name}.out").read_text(errors="replace") for name in ("learner", "collectors", "late")}
    assert learner.returncode == 0 and "game over" in out["learner"], out["learner"][-3000:]
    # the collectors leave on their own when the game is over; the killed one makes the status 1
    assert collectors.returncode == 1 and "collector_1 exited with status -9" in out["collectors"], out["collectors"][-3000:]
    assert "game over for this machine's collectors" in out["collectors"]
    assert f"coordinator_key:={key}" in out["learner"]  # the learner printed how collectors join
    assert late.returncode == 0 and "game over for this machine's collectors" in out["late"], out["late"][-3000:]

    link = json.loads(sniff_out.read_text())
    assert link["ipv4_multicast"] == 0 and link["ipv4_broadcast"] == 0, link  # unicast discovery and data only
    summary = json.loads((learner_dir / "summary.json").read_text())
    episodes = _episodes(Path(summary["mcap"]))
    assert link["udp_unicast_bytes"] > 4 * 40 * 30 * len(episodes), link  # every episode crossed the link

    # every episode the remote collectors published is recorded once, whole, in sequence
    ids = [e.episode_id for e in episodes]
    assert len(ids) == len(set(ids)) == summary["episodes"]
    streams: dict[tuple[str, str], list[int]] = defaultdict(list)
    for e in episodes:
        assert e.length == 40, f"{e.episode_id} is not a whole episode"
        streams[(e.robot_id, e.stream)].append(e.sequence)
    for key, seqs in streams.items():
        assert sorted(seqs) == list(range(len(seqs))), f"gap or duplicate in {key}"
    assert {r for r, _s in streams} == {"sim0", "sim1", "sim2"}
    assert summary["samples"] == 40 * len(episodes) and summary["sequence_gaps"] == 0
    assert summary["samples"] >= summary["sample_budget"] - 80
    ledger = json.loads((learner_dir / "model_learner" / "learner_state.json").read_text())["intake"]
    assert sorted(ledger["ids"]) == sorted(ids) and ledger["duplicates"] == 0 and ledger["gaps"] == 0
    # the survivors' own counts: nothing they published was lost on the way
    published = _left((coll_dir / "logs" / "collector_0.log").read_text(errors="replace"))
    published.update(_left((late_dir / "logs" / "collector_2.log").read_text(errors="replace")))
    recorded = {s: len(q) for (r, s), q in streams.items() if r in ("sim0", "sim2")}
    assert published == recorded, (published, recorded)

    # the late joiner received the policy deployed when it joined (or a newer one) and collected with it
    late_log = (late_dir / "logs" / "collector_2.log").read_text(errors="replace")
    received = [int(v) for v in re.findall(r"policy v(\d+) received", late_log)]
    assert received and received[0] >= joined_at, (joined_at, late_log[-2000:])
    assert min(e.policy_version for e in episodes if e.robot_id == "sim2") >= joined_at
