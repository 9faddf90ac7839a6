"""deploy/podman/ stays in step with compose.yaml: the NATS and Redis images that images.sh
builds carry exactly the names compose.yaml runs, and the no-Jaeger override names only
services compose.yaml has. (The stack itself runs in tests/integration/test_compose_podman.py.)"""

from __future__ import annotations

import re

import yaml

from tests.deploy import compose_file

PODMAN = compose_file.ROOT / "deploy" / "podman"


def _images_sh_tag(var: str) -> str:
    m = re.search(rf"^{var}=(\S+)$", (PODMAN / "images.sh").read_text(), re.MULTILINE)
    assert m, f"{var}= not found in images.sh"
    return m.group(1)


def _docker_hub_name(image: str) -> str:
    """The full name Docker and podman give a short Docker Hub name."""
    if "/" not in image:
        image = "library/" + image
    return image if image.count("/") > 1 else "docker.io/" + image


def test_local_nats_and_redis_images_carry_the_names_compose_runs() -> None:
    services = compose_file.load()["services"]
    assert _images_sh_tag("NATS") == _docker_hub_name(services["nats"]["image"])
    assert _images_sh_tag("REDIS") == _docker_hub_name(services["redis"]["image"])


def test_no_jaeger_override_names_only_compose_services() -> None:
    override = yaml.safe_load((PODMAN / "compose.no-jaeger.yaml").read_text())
    assert set(override["services"]) <= set(compose_file.load()["services"])
    assert override["services"]["jaeger"]["profiles"] == ["jaeger"]
