"""The ATTNSERVE_* settings the Kubernetes ConfigMap gives the server (base merged with each
overlay) are options `attnserve serve` knows, and values it starts with."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.cli import build_parser
from service.config import ENV_PREFIX, settings_from_args

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")


def _config_literals(kustomization: Path) -> dict[str, str]:
    generators = yaml.safe_load(kustomization.read_text()).get("configMapGenerator", [])
    literals = [lit for g in generators if g["name"] == "attnserve-config" for lit in g["literals"]]
    return dict(literal.split("=", 1) for literal in literals)


def _overlay_environment(overlay: str) -> dict[str, str]:
    environ = _config_literals(K8S / "base" / "kustomization.yaml")
    environ.update(_config_literals(K8S / "overlays" / overlay / "kustomization.yaml"))
    return environ


def _serve_defaults():
    return build_parser().parse_args(["serve"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_names_only_serve_options(overlay):
    known = {ENV_PREFIX + name.upper() for name in vars(_serve_defaults()) if name != "command"}
    assert set(_overlay_environment(overlay)) - known == set()


@pytest.mark.parametrize(("overlay", "device"), [("cpu", "cpu"), ("gpu", "cuda")])
def test_configmap_settings_are_valid(overlay, device, tmp_path):
    environ = _overlay_environment(overlay) | {"ATTNSERVE_MODELS": str(tmp_path)}
    settings = settings_from_args(_serve_defaults(), environ)
    assert settings.engine.device == device
    assert (settings.port, settings.metrics_port) == (50051, 9090)
