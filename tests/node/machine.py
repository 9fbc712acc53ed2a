"""What a node changes on the machine, noted before it starts and put back after it stops.

kubelet, kube-proxy, kube-router's firewall, containerd, runc and the CNI plugins change
sysctls, add network links, nftables tables, iptables chains and ipsets, mount
filesystems, create cgroups and directories. ``Snapshot.take()`` notes the machine's
state; ``Snapshot.restore()`` removes what appeared since and sets the sysctls back;
``Snapshot.differences()`` says what is still not as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSCTLS = (
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)
#: Places the node's parts create even when told to keep their state elsewhere.
DIRECTORIES = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/run/containerd",
    "/run/runc",
    "/run/netns",
    "/var/run/netns",
    "/var/log/pods",
    "/var/log/containers",
    "/usr/libexec/kubernetes",
    "/etc/cni",
    "/opt/cni",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
IPTABLES = ("iptables", "ip6tables")


def _out(*argv: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def _sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _links() -> set[str]:
    return {
        line.split(":")[1].strip().split("@")[0] for line in _out("ip", "-o", "link").splitlines()
    }


def _addresses() -> set[str]:
    """ "dev cidr" of every address."""
    out = set()
    for line in _out("ip", "-o", "addr", "show").splitlines():
        words = line.split()
        if len(words) > 3:
            out.add(f"{words[1]} {words[3]}")
    return out


def _nft_tables() -> set[str]:
    return {
        " ".join(line.split()[1:3])
        for line in _out("nft", "list", "tables").splitlines()
        if line.startswith("table ")
    }


def _save(cmd: str) -> dict[str, list[str]]:
    """``iptables-save`` by table. Never ``-t``: with iptables-nft, naming a table that
    does not exist creates it."""
    tables: dict[str, list[str]] = {}
    current = None
    for line in _out(f"{cmd}-save").splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), [])
        elif current is not None:
            current.append(line)
    return tables


def _chains() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for cmd in IPTABLES:
        for table, lines in _save(cmd).items():
            out[f"{cmd} {table}"] = {line[1:].split()[0] for line in lines if line.startswith(":")}
    return out


def _ipsets() -> set[str]:
    return set(_out("ipset", "list", "-n").split())


def _mounts() -> list[str]:
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            points.append(line.split()[4].replace("\\040", " "))
    return points


def _cgroups() -> set[str]:
    found: set[str] = set()
    if not CGROUP_ROOT.is_dir():
        return found
    for controller in CGROUP_ROOT.iterdir():
        with contextlib.suppress(OSError):
            found |= {str(p) for p in controller.iterdir() if p.is_dir()}
    return found


@dataclass
class Snapshot:
    sysctls: dict[str, str | None] = field(default_factory=dict)
    directories: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    nft_tables: set[str] = field(default_factory=set)
    chains: dict[str, set[str]] = field(default_factory=dict)
    ipsets: set[str] = field(default_factory=set)
    mounts: set[str] = field(default_factory=set)
    cgroups: set[str] = field(default_factory=set)

    @classmethod
    def take(cls) -> Snapshot:
        return cls(
            sysctls={name: _sysctl(name) for name in SYSCTLS},
            directories={d for d in DIRECTORIES if os.path.lexists(d)},
            links=_links(),
            addresses=_addresses(),
            nft_tables=_nft_tables(),
            chains=_chains(),
            ipsets=_ipsets(),
            mounts=set(_mounts()),
            cgroups=_cgroups(),
        )

    def restore(self) -> list[str]:
        """Undo what appeared since the snapshot; returns what it did, for the log."""
        done: list[str] = []
        # What still runs in the node's cgroups first, then the cgroups themselves.
        for cgroup in sorted(_cgroups() - self.cgroups, key=len, reverse=True):
            _remove_cgroup(Path(cgroup))
            done.append(f"removed cgroup {cgroup}")
        # Mounts next, innermost first: nothing below can be removed while mounted.
        for point in reversed(_mounts()):
            if point in self.mounts:
                continue
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            done.append(f"unmounted {point}")
        for link in sorted(_links() - self.links):
            if subprocess.run(["ip", "link", "delete", link], capture_output=True).returncode == 0:
                done.append(f"deleted link {link}")
        for address in sorted(_addresses() - self.addresses):
            dev, cidr = address.split()
            subprocess.run(["ip", "addr", "delete", cidr, "dev", dev], capture_output=True)
            done.append(f"deleted address {cidr} of {dev}")
        for table in sorted(_nft_tables() - self.nft_tables):
            subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True)
            done.append(f"deleted nftables table {table}")
        done += self._restore_chains()
        # After the chains: an ipset a rule still uses cannot be destroyed.
        for name in sorted(_ipsets() - self.ipsets):
            subprocess.run(["ipset", "destroy", name], capture_output=True)
            done.append(f"destroyed ipset {name}")
        for name, value in self.sysctls.items():
            if value is not None and _sysctl(name) != value:
                subprocess.run(["sysctl", "-q", "-w", f"{name}={value}"], capture_output=True)
                done.append(f"set {name} back to {value}")
        for d in DIRECTORIES:
            if d not in self.directories and os.path.lexists(d):
                shutil.rmtree(d, ignore_errors=True)
                if os.path.islink(d):
                    os.unlink(d)
                done.append(f"removed {d}")
        return done

    def _restore_chains(self) -> list[str]:
        done = []
        for key, chains in _chains().items():
            new = chains - self.chains.get(key, set())
            if not new:
                continue
            cmd, table = key.split()
            jumps = re.compile(r" -[jg] (" + "|".join(map(re.escape, new)) + r")\b")
            # Rules that jump to a new chain, from any chain, go first; then the chains.
            for line in _save(cmd).get(table, []):
                if line.startswith("-A ") and jumps.search(line):
                    args = line.split()
                    args[0] = "-D"
                    subprocess.run([cmd, "-t", table, *args], capture_output=True)
            for chain in new:
                subprocess.run([cmd, "-t", table, "-F", chain], capture_output=True)
            for chain in new:
                subprocess.run([cmd, "-t", table, "-X", chain], capture_output=True)
                done.append(f"deleted {cmd} chain {table}/{chain}")
        return done

    def differences(self) -> list[str]:
        """What is not as it was when the snapshot was taken."""
        now = Snapshot.take()
        diffs = [
            f"{name} is {now.sysctls[name]} (was {value})"
            for name, value in self.sysctls.items()
            if now.sysctls.get(name) != value
        ]
        diffs += [f"{d} exists" for d in sorted(now.directories - self.directories)]
        diffs += [f"link {x} exists" for x in sorted(now.links - self.links)]
        diffs += [f"address {x} exists" for x in sorted(now.addresses - self.addresses)]
        diffs += [f"nftables table {x} exists" for x in sorted(now.nft_tables - self.nft_tables)]
        for key, chains in now.chains.items():
            diffs += [
                f"{key} chain {c} exists" for c in sorted(chains - self.chains.get(key, set()))
            ]
        diffs += [f"ipset {x} exists" for x in sorted(now.ipsets - self.ipsets)]
        diffs += [f"mount {m} exists" for m in sorted(now.mounts - self.mounts)]
        diffs += [f"cgroup {c} exists" for c in sorted(now.cgroups - self.cgroups)]
        return diffs


def _remove_cgroup(path: Path) -> None:
    """Stop what still runs in a cgroup the node made (its pods' processes, which a killed
    runtime may have left behind), then rmdir it and its children, deepest first."""
    if not path.is_dir():
        return
    for _ in range(50):
        pids = [int(pid) for procs in path.rglob("cgroup.procs") for pid in _read(procs).split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    children = sorted(
        (p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    )
    for child in [*children, path]:
        with contextlib.suppress(OSError):
            child.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
