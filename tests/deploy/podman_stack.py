"""compose.yaml run for real, in containers, with podman and podman-compose.

`PodmanStack` drives one compose project (its own name, so it never touches a user's `kvmesh`
stack) from a settings dict that stands in for `.env`. It answers in podman's terms: the
containers of a service (by the labels podman-compose sets), a container's own health check
(`podman healthcheck run`, which runs the `healthcheck.test` of compose.yaml inside it), a
command run inside a container, and what is left after `down`.

Why health checks are run by hand: podman runs them from systemd timers, and this kind of
machine has no systemd, so a container's health status changes only when someone runs its
check. podman-compose also ignores `condition: service_healthy` on podman older than 4.6
(Debian bookworm has 4.3), so the stack's own start order rests on services that retry (every
kvmesh actor reconnects to NATS) and on `restart: unless-stopped`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.deploy.compose_file import COMPOSE, ROOT

NO_JAEGER = ROOT / "deploy" / "podman" / "compose.no-jaeger.yaml"
PROJECT_LABEL = "io.podman.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


class StackError(AssertionError):
    """A compose or podman command failed, or a service never became healthy."""


def run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
        log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv`; its output goes to `log` (appended) when given. Raises StackError on a
    non-zero exit, with the tail of the output."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else dict(env), cwd=ROOT)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise StackError(f"{' '.join(argv)} exited {done.returncode}:\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return done


class PodmanStack:
    """One compose project of compose.yaml (plus `overrides`), settings from `settings`."""

    def __init__(self, project: str, settings: Mapping[str, str], logs: Path,
                 overrides: Sequence[Path] = (NO_JAEGER,)) -> None:
        self.project = project
        self.logs = logs
        self.env_file = logs / "compose.env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        # podman-compose interpolates from its own environment first, then --env-file.
        self.env = {**os.environ, **settings}
        self.files = [COMPOSE, *overrides]

    @property
    def network(self) -> str:
        """The project's default network, as podman-compose names it."""
        return f"{self.project}_default"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "podman_compose", "-p", self.project, "--in-pod", "false",
                "--env-file", str(self.env_file)]
        for f in self.files:
            argv += ["-f", str(f)]
        return run([*argv, *args], timeout, self.env, self.logs / "compose.log")

    def podman(self, *args: str, timeout: float = 60) -> str:
        return run(["podman", *args], timeout, log=self.logs / "podman.log").stdout

    def containers(self, service: str | None = None, all_states: bool = False) -> list[str]:
        """Names of this project's containers (of `service`), running ones unless
        `all_states`."""
        argv = ["ps", "--format", "{{.Names}}", "--filter", f"label={PROJECT_LABEL}={self.project}"]
        if service is not None:
            argv += ["--filter", f"label={SERVICE_LABEL}={service}"]
        if all_states:
            argv.append("--all")
        return sorted(self.podman(*argv).split())

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(self.podman("inspect", container))[0]

    def exec(self, container: str, *argv: str, timeout: float = 120) -> str:
        return self.podman("exec", container, *argv, timeout=timeout)

    def create_network(self) -> str:
        """Create the project's network before `up` (podman-compose then uses it) and return
        its gateway address: the host's side of the network, where the test's own OTLP
        receiver listens."""
        self.podman("network", "create", "--label", f"{PROJECT_LABEL}={self.project}",
                    self.network)
        info = json.loads(self.podman("network", "inspect", self.network))[0]
        return str(info["subnets"][0]["gateway"])

    def health(self, container: str) -> tuple[bool, str]:
        """Run the container's own health check once: (healthy, what the check said)."""
        done = subprocess.run(["podman", "healthcheck", "run", container], capture_output=True,
                              text=True, timeout=60)
        return done.returncode == 0, (done.stdout + done.stderr).strip()

    def wait_healthy(self, container: str, timeout: float) -> float:
        """Run the check until it passes; seconds it took. StackError, with the check's last
        words and the container's log tail, when `timeout` passes first."""
        start = time.monotonic()
        said = ""
        while time.monotonic() - start < timeout:
            ok, said = self.health(container)
            if ok:
                return time.monotonic() - start
            time.sleep(1.0)
        tail = subprocess.run(["podman", "logs", "--tail", "30", container], capture_output=True,
                              text=True, timeout=30)
        raise StackError(f"{container} not healthy in {timeout:g}s: {said}\n"
                         f"{tail.stdout}{tail.stderr}")

    def wait_exited(self, container: str, timeout: float) -> int:
        """Wait for a one-shot container to exit; its exit code."""
        out = self.podman("wait", container, timeout=timeout)
        return int(out.strip().splitlines()[-1])

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, pods, networks and volumes of this project that still exist."""
        label = f"label={PROJECT_LABEL}={self.project}"
        found = {
            "containers": self.podman("ps", "-a", "--format", "{{.Names}}", "--filter", label),
            "networks": self.podman("network", "ls", "--format", "{{.Name}}", "--filter", label),
            "volumes": self.podman("volume", "ls", "--format", "{{.Name}}", "--filter", label),
            "pods": self.podman("pod", "ps", "--format", "{{.Name}}", "--filter", label),
        }
        return {k: v.split() for k, v in found.items() if v.split()}

    def remove_leftovers(self) -> None:
        """Force-remove what a killed run of this project left (containers, then volumes and
        the network), without compose: its settings may be gone with the run."""
        left = self.leftovers()
        if left.get("containers"):  # --depend: podman-compose links containers (--requires)
            self.podman("rm", "-f", "--depend", "--ignore", *left["containers"], timeout=300)
        for name in left.get("volumes", []):
            self.podman("volume", "rm", "-f", name)
        subprocess.run(["podman", "network", "rm", "-f", self.network], capture_output=True,
                       timeout=60)

    def save_logs(self, path: Path) -> None:
        """Append every container's log (the last 300 lines each) to `path`."""
        with path.open("a") as f:
            for name in self.containers(all_states=True):
                done = subprocess.run(["podman", "logs", "--tail", "300", name],
                                      capture_output=True, text=True, timeout=60)
                f.write(f"===== {name}\n{done.stdout}{done.stderr}")
