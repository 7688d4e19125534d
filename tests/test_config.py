"""The configuration writer: `pivot remote …` edits keep comments and key order, and `--local`
edits only .pivot/config.local.yaml (the committed file stays byte-identical)."""

from __future__ import annotations

import yaml
from conftest import Project

ANNOTATED = """\
# Team settings: read me first.
pipeline: pipeline.py   # where the stages are
cache:
  link: auto            # copy on this NFS mount would be slow
remotes:
  # the shared bucket
  zeta:
    url: /srv/zeta      # keep this first
  alpha:
    url: /srv/alpha
"""


def test_remote_edits_keep_comments_and_key_order(project: Project) -> None:
    project.write(".pivot/config.yaml", ANNOTATED)
    project.pivot("remote", "add", "beta", "/srv/beta", "-o", "retries=2")
    project.pivot("remote", "default", "alpha")
    text = project.read(".pivot/config.yaml")
    for comment in ("# Team settings: read me first.", "# where the stages are",
                    "# copy on this NFS mount would be slow", "# the shared bucket", "# keep this first"):
        assert comment in text, text
    assert text.index("pipeline:") < text.index("cache:") < text.index("remotes:") < text.index("remote:")
    assert text.index("zeta:") < text.index("alpha:") < text.index("beta:")
    data = yaml.safe_load(text)
    assert data["remotes"]["beta"] == {"url": "/srv/beta", "retries": 2}
    assert data["remote"] == {"default": "alpha"}
    project.pivot("remote", "remove", "zeta")
    text = project.read(".pivot/config.yaml")
    assert "zeta" not in text and "# Team settings: read me first." in text and "# where the stages are" in text
    assert project.pivot("remote", "default").stdout.strip() == "alpha"


def test_local_edits_leave_the_committed_config_byte_identical(project: Project) -> None:
    project.write(".pivot/config.yaml", ANNOTATED)
    before = (project.root / ".pivot" / "config.yaml").read_bytes()
    project.pivot("remote", "add", "mine", "/srv/mine", "--local", "--default", "-o", "token=T0KEN")
    project.pivot("remote", "default", "alpha", "--local")
    project.pivot("remote", "add", "alpha", "/elsewhere/alpha", "--local", "--force")
    project.pivot("remote", "remove", "mine", "--local")
    assert (project.root / ".pivot" / "config.yaml").read_bytes() == before
    local = yaml.safe_load(project.read(".pivot/config.local.yaml"))
    assert local == {"remote": {"default": "alpha"}, "remotes": {"alpha": {"url": "/elsewhere/alpha"}}}
    listing = project.pivot("remote", "list").stdout
    assert "alpha\t/elsewhere/alpha (default)" in listing and "mine" not in listing
    refused = project.pivot("remote", "remove", "zeta", "--local", check=False)
    assert refused.returncode == 1 and "unknown remote 'zeta' in .pivot/config.local.yaml" in refused.stderr
    assert (project.root / ".pivot" / "config.yaml").read_bytes() == before


def test_the_settings_pivot_init_writes_are_known_as_pyyaml_reads_them(project: Project) -> None:
    # A project's first command reads the configuration `pivot init` wrote without PyYAML
    # (pivot/config.py INIT_CONFIG): what it takes them to say must be what they say.
    from pivot.config import INIT_CONFIG, init_settings

    assert project.read(".pivot/config.yaml") == INIT_CONFIG
    assert yaml.safe_load(INIT_CONFIG) == init_settings()
