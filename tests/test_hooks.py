"""Git hooks with a real git: install/uninstall, chaining, and what each hook does."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import PIVOT, Project

from pivot.checkmemo import MEMO_KEY

REPO = Path(__file__).resolve().parents[1]
HOOKS = ("pre-commit", "post-checkout", "post-merge", "pre-push")

PIPELINE = '''
from pivot import Metric, stage

SCALE = 2


def shout(text):
    return text.upper() * SCALE


@stage(deps=["data/raw.txt"], outs=["data/loud.txt", Metric("metrics.json")])
def loud():
    text = open("data/raw.txt").read()
    open("data/loud.txt", "w").write(shout(text))
    open("metrics.json", "w").write('{"chars": %d}\\n' % len(text))


@stage(deps=["data/loud.txt"], outs=["data/final.txt"])
def final():
    open("data/final.txt", "w").write(open("data/loud.txt").read() + "!")
'''


def git(cwd: Path, *args: str, check: bool | None = True, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run git. check=True: expect exit 0; False: expect non-zero; None: either."""
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, input=stdin,
                          timeout=120)
    if check is not None and (proc.returncode == 0) != check:
        raise AssertionError(f"git {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def setup(project: Project, hooks: bool = True) -> Project:
    """A committed, up-to-date two-stage project, with the hooks installed."""
    project.write("data/raw.txt", "hello\n")
    project.pipeline(PIPELINE)
    project.pivot("run")
    if hooks:
        project.pivot("hooks", "install")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "first")
    return project


def hook_path(project: Project, hook: str) -> Path:
    return project.root / ".git" / "hooks" / hook


def user_hook(path: Path, body: str) -> str:
    text = "#!/bin/sh\n" + textwrap.dedent(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return text


# -- install / uninstall ----------------------------------------------------------------------


def test_install_writes_marked_shims_that_record_this_pivot(project: Project) -> None:
    out = project.pivot("hooks", "install").stdout
    for hook in HOOKS:
        path = hook_path(project, hook)
        assert f"{hook}: installed at {path}" in out
        text = path.read_text()
        assert "pivot-hook-marker" in text and f"HOOK='{hook}'" in text
        assert f"PIVOT='{PIVOT}'" in text and "PROJECT='.'" in text
        assert os.access(path, os.X_OK)


def test_reinstall_is_a_no_op(project: Project) -> None:
    project.pivot("hooks", "install")
    before = {h: (hook_path(project, h).read_bytes(), hook_path(project, h).stat().st_mtime_ns) for h in HOOKS}
    out = project.pivot("hooks", "install").stdout
    assert out.count("already installed") == 4
    assert not list((project.root / ".git" / "hooks").glob("*.pre-pivot"))
    after = {h: (hook_path(project, h).read_bytes(), hook_path(project, h).stat().st_mtime_ns) for h in HOOKS}
    assert after == before


def test_core_hooks_path_is_refused_with_a_hint(project: Project) -> None:
    project.git("config", "core.hooksPath", ".githooks")
    proc = project.pivot("hooks", "install", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: core.hooksPath is set (to '.githooks')")
    assert "git config --unset-all core.hooksPath" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not hook_path(project, "pre-commit").exists()


def test_install_outside_a_project_is_one_line(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "bare")], check=True)
    proc = subprocess.run([PIVOT, "hooks", "install"], cwd=tmp_path / "bare", capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: not inside a Pivot project") and proc.stderr.count("\n") == 1


def test_user_hook_is_chained_and_restored_on_uninstall(project: Project) -> None:
    setup(project, hooks=False)
    marker = project.root / "user-hook-ran"
    original = user_hook(hook_path(project, "pre-commit"), f'echo "$@" >> "{marker}"\nexit 0\n')
    out = project.pivot("hooks", "install").stdout
    assert "kept as pre-commit.pre-pivot and still runs first" in out
    assert (project.root / ".git" / "hooks" / "pre-commit.pre-pivot").read_text() == original

    project.write("notes.txt", "a\n")
    project.git("add", "notes.txt")
    git(project.root, "commit", "-q", "-m", "notes")
    assert marker.exists(), "the user's own pre-commit hook must keep running"

    out = project.pivot("hooks", "uninstall").stdout
    assert "pre-commit: removed; your previous hook is back in place" in out
    assert hook_path(project, "pre-commit").read_text() == original
    assert not hook_path(project, "post-merge").exists()
    assert not list((project.root / ".git" / "hooks").glob("*.pre-pivot"))


def test_failing_user_hook_blocks_the_commit(project: Project) -> None:
    setup(project, hooks=False)
    user_hook(hook_path(project, "pre-commit"), 'echo "user hook says no" >&2\nexit 3\n')
    project.pivot("hooks", "install")
    project.write("notes.txt", "a\n")
    project.git("add", "notes.txt")
    proc = git(project.root, "commit", "-q", "-m", "notes", check=False)
    assert "user hook says no" in proc.stderr
    assert "notes" not in project.git("log", "--oneline")


def test_uninstall_leaves_a_foreign_hook_alone(project: Project) -> None:
    project.pivot("hooks", "install", "-t", "pre-push")
    foreign = user_hook(hook_path(project, "pre-push"), "exit 0\n")
    out = project.pivot("hooks", "uninstall").stdout
    assert "pre-push: " in out and "was not installed by pivot; left alone" in out
    assert hook_path(project, "pre-push").read_text() == foreign


def test_install_refuses_to_overwrite_a_kept_hook(project: Project) -> None:
    user_hook(hook_path(project, "pre-commit"), "exit 0\n")
    project.pivot("hooks", "install", "-t", "pre-commit")
    user_hook(hook_path(project, "pre-commit"), "echo replaced-by-another-tool\n")  # pivot's shim overwritten
    proc = project.pivot("hooks", "install", "-t", "pre-commit", check=False)
    assert "pre-commit.pre-pivot already holds a hook" in proc.stderr
    assert "replaced-by-another-tool" in hook_path(project, "pre-commit").read_text()


def test_hook_without_pivot_says_so(project: Project) -> None:
    setup(project)
    path = hook_path(project, "pre-commit")
    path.write_text(path.read_text().replace(f"PIVOT='{PIVOT}'", "PIVOT='/nonexistent/bin/pivot'"))
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    project.write("notes.txt", "a\n")
    project.git("add", "notes.txt")
    proc = git(project.root, "commit", "-q", "-m", "notes", check=False, env=env)
    assert "pivot not found (/nonexistent/bin/pivot is missing and 'pivot' is not on PATH)" in proc.stderr
    assert "git commit --no-verify" in proc.stderr
    # post-checkout never fails the checkout, even without pivot
    post = hook_path(project, "post-checkout")
    post.write_text(post.read_text().replace(f"PIVOT='{PIVOT}'", "PIVOT=''"))
    proc = git(project.root, "checkout", "-q", "-b", "other", env=env)
    assert "pivot not found" in proc.stderr


def test_hook_falls_back_to_pivot_on_path(project: Project) -> None:
    setup(project)
    path = hook_path(project, "pre-commit")
    path.write_text(path.read_text().replace(f"PIVOT='{PIVOT}'", "PIVOT='/nonexistent/bin/pivot'"))
    project.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 3"))
    project.git("add", "pipeline.py")
    env = {**os.environ, "PATH": f"{Path(PIVOT).parent}:/usr/bin:/bin"}
    proc = git(project.root, "commit", "-q", "-m", "stale", check=False, env=env)
    assert "loud: stale" in proc.stderr  # the check ran, through the pivot found on PATH


# -- pre-commit ---------------------------------------------------------------------------------


def test_stale_code_is_refused_then_accepted_after_run_and_add(project: Project) -> None:
    setup(project)
    project.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 3"))
    project.git("add", "pipeline.py")
    proc = git(project.root, "commit", "-q", "-m", "scale", check=False)
    err = proc.stderr
    assert "loud: stale" in err and "SCALE changed" in err  # the reason, from the decision
    assert "fix: pivot run loud" in err
    assert "final: stale" in err and "upstream stage 'loud' will run" in err
    assert "pivot: commit refused: 2 of 2 stage(s) stale." in err
    assert "git commit --no-verify" in err

    project.pivot("run")
    proc = git(project.root, "commit", "-q", "-m", "scale", check=False)
    assert ".pivot/stages/loud.lock (stage loud): lock file differs from its staged version" in proc.stderr
    assert "fix: git add .pivot/stages/loud.lock" in proc.stderr
    assert "metrics.json" not in proc.stderr  # same length text: the metric did not change

    project.git("add", "-A")
    git(project.root, "commit", "-q", "-m", "scale")
    assert "scale" in project.git("log", "--oneline")


def test_a_lock_left_unstaged_is_only_a_git_add(project: Project) -> None:
    setup(project)
    project.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 3"))
    project.pivot("run")  # both locks are right in the workspace; only 'git add' is missing
    project.git("add", "pipeline.py")
    err = git(project.root, "commit", "-q", "-m", "scale", check=False).stderr
    assert "fix: git add .pivot/stages/loud.lock" in err and "fix: git add .pivot/stages/final.lock" in err
    assert "stale" not in err and "pivot run" not in err and "will run" not in err, err
    assert "pivot: commit refused: 2 file(s) staged differently from the workspace." in err

    project.git("add", ".pivot/stages/final.lock")  # the downstream lock added, the upstream one forgotten
    err = git(project.root, "commit", "-q", "-m", "scale", check=False).stderr
    assert ".pivot/stages/loud.lock (stage loud): lock file differs from its staged version" in err
    assert "fix: git add .pivot/stages/loud.lock" in err
    assert "final" not in err and "stale" not in err and "pivot run" not in err, err

    project.git("add", ".pivot/stages/loud.lock")
    git(project.root, "commit", "-q", "-m", "scale")


def test_a_stale_stage_with_an_unstaged_lock_still_needs_a_run(project: Project) -> None:
    setup(project)
    project.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 3"))
    project.pivot("run")
    project.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 4"))  # changed again, not run
    project.git("add", "pipeline.py")
    err = git(project.root, "commit", "-q", "-m", "scale", check=False).stderr
    assert "loud: stale" in err and "fix: pivot run loud" in err and "final: stale" in err, err


def test_hand_edited_metric_is_refused(project: Project) -> None:
    setup(project)
    project.write("metrics.json", '{"chars": 999}\n')
    project.git("add", "metrics.json")
    proc = git(project.root, "commit", "-q", "-m", "fake", check=False)
    assert "metrics.json (stage loud): metric does not match its lock" in proc.stderr
    assert "loud: stale" in proc.stderr


def test_new_stage_never_run_is_refused(project: Project) -> None:
    setup(project)
    project.write("pipeline.py", PIPELINE + textwrap.dedent('''
        @stage(deps=["data/final.txt"], outs=["data/extra.txt"])
        def extra():
            open("data/extra.txt", "w").write("x")
    '''))
    project.git("add", "pipeline.py")
    proc = git(project.root, "commit", "-q", "-m", "extra", check=False)
    assert "extra: stale" in proc.stderr and "never run: no lock file" in proc.stderr


def test_commit_checks_the_staged_code_not_the_workspace(project: Project) -> None:
    setup(project)
    # Staged: a stale change. Workspace: that change undone (unstaged). The commit is stale.
    project.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 3"))
    project.git("add", "pipeline.py")
    project.write("pipeline.py", PIPELINE)
    proc = git(project.root, "commit", "-q", "-m", "staged-stale", check=False)
    assert "loud: stale" in proc.stderr
    assert project.read("pipeline.py") == textwrap.dedent(PIPELINE), "unstaged changes must come back"
    assert "SCALE = 3" in project.git("show", ":pipeline.py")

    # Staged: nothing stale. Workspace: a stale edit left unstaged. The commit is fine.
    project.git("reset", "-q")
    project.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 4"))
    project.write("notes.txt", "n\n")
    project.git("add", "notes.txt")
    git(project.root, "commit", "-q", "-m", "notes")
    assert "SCALE = 4" in project.read("pipeline.py")
    assert project.git("status", "--porcelain").strip() == "M pipeline.py"


def test_untracked_helper_module_is_refused(project: Project) -> None:
    setup(project)
    project.write("helpers.py", "def shout(text):\n    return text.upper() * 2\n")
    project.write("pipeline.py", PIPELINE.replace("def shout(text):\n    return text.upper() * SCALE\n",
                                                  "from helpers import shout\n"))
    project.pivot("run")
    project.git("add", "pipeline.py", ".pivot")
    proc = git(project.root, "commit", "-q", "-m", "helpers", check=False)
    assert "helpers.py: module imported by the pipeline, but not staged" in proc.stderr
    assert "fix: git add helpers.py" in proc.stderr
    project.git("add", "helpers.py")
    git(project.root, "commit", "-q", "-m", "helpers")


def test_new_lock_and_metric_never_added_are_refused(project: Project) -> None:
    # git is asked about untracked files only where the check looks: these must still be seen.
    setup(project)
    project.pipeline(PIPELINE + '''

@stage(deps=["data/final.txt"], outs=[Metric("reports/size.json")])
def size():
    import os
    os.makedirs("reports", exist_ok=True)
    open("reports/size.json", "w").write('{"n": %d}\\n' % len(open("data/final.txt").read()))
''')
    project.pivot("run")
    project.git("add", "pipeline.py")
    proc = git(project.root, "commit", "-q", "-m", "size", check=False)
    assert ".pivot/stages/size.lock (stage size): lock file is not staged" in proc.stderr, proc.stderr
    assert "reports/size.json (stage size): metric is not staged" in proc.stderr, proc.stderr
    project.git("add", ".pivot/stages/size.lock", "reports/size.json")
    git(project.root, "commit", "-q", "-m", "size")


def test_memo_skips_the_full_check_only_while_nothing_changed(project: Project) -> None:
    setup(project)
    time.sleep(2.1)  # files younger than 2 s are never trusted by the memo
    assert "all 2 stage(s) match" in project.pivot("verify").stdout
    hit = project.pivot("verify", "--staged").stdout
    assert "nothing the check reads changed since the last full check" in hit
    project.write("data/raw.txt", "changed\n")  # a dep: the memo must not hide it
    project.git("add", "data/raw.txt")
    proc = project.pivot("verify", "--staged", check=False)
    assert "loud: stale" in proc.stdout and "dep 'data/raw.txt' changed" in proc.stdout
    assert "nothing the check reads changed" not in proc.stdout
    project.git("checkout", "HEAD", "--", "data/raw.txt")
    time.sleep(2.1)
    assert "all 2 stage(s) match" in project.pivot("verify").stdout
    assert "nothing the check reads changed" in project.pivot("verify", "--staged").stdout
    shutil.rmtree(project.root / ".pivot" / "cache")
    project.write("data/final.txt", "edited output\n")  # an output (git ignores it), no longer restorable
    proc = project.pivot("verify", "--staged", check=False)
    assert "final: stale" in proc.stdout and "output 'data/final.txt' was modified" in proc.stdout


def test_memo_holds_while_the_modules_bytes_and_names_do(project: Project) -> None:
    """The pipeline's modules are remembered by their bytes and their folders by the names in
    them: a module saved unchanged, rewritten with the same bytes or set aside and back by the
    check itself keeps the memo; a new file beside it, or an edit, does not."""
    setup(project)
    time.sleep(2.1)  # files younger than 2 s are never trusted by the memo
    assert "all 2 stage(s) match" in project.pivot("verify").stdout
    pipeline = project.root / "pipeline.py"
    os.utime(pipeline, None)  # an editor saving it unchanged
    assert "nothing the check reads changed" in project.pivot("verify", "--staged").stdout
    pipeline.unlink()  # rewritten with the same bytes (a checkout back and forth): new inode too
    project.pipeline(PIPELINE)
    assert "nothing the check reads changed" in project.pivot("verify", "--staged").stdout
    project.pipeline(PIPELINE + "# not staged\n")  # set aside while checking, then put back
    out = project.pivot("verify", "--staged").stdout
    assert "unstaged changes were set aside" in out and "nothing the check reads changed" in out
    project.pipeline(PIPELINE)
    project.write("json.py", "")  # a new module beside the pipeline could shadow an import
    assert "nothing the check reads changed" not in project.pivot("verify", "--staged").stdout
    (project.root / "json.py").unlink()
    project.pipeline(PIPELINE.replace("* SCALE", "* 3"))
    project.git("add", "pipeline.py")
    proc = project.pivot("verify", "--staged", check=False)
    assert "loud: stale" in proc.stdout and "nothing the check reads changed" not in proc.stdout


def test_a_memo_another_version_wrote_is_ignored(project: Project) -> None:
    """A hook installed by another Pivot shares the state database: a memo this version did not
    write (here an earlier format under the current key) means a full check, never a crash."""
    setup(project)
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:
        old = json.dumps({"digest": "0", "stages": ["loud", "final"], "metrics": [], "modules": ["pipeline.py"],
                          "stat_paths": ["pipeline.py"], "tree_paths": [".pivot/stages"]})
        db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [("verify-memo", old), (MEMO_KEY, old)])
        db.commit()
    finally:
        db.close()
    proc = project.pivot("verify", "--staged")
    assert "all 2 stage(s) match" in proc.stdout and "nothing the check reads changed" not in proc.stdout


def test_branch_without_pivot_project_is_not_checked(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([PIVOT, "init"], cwd=root, check=True, capture_output=True)
    subprocess.run([PIVOT, "hooks", "install"], cwd=root, check=True, capture_output=True)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "no pipeline yet")  # no pipeline.py: nothing to verify
    shutil.rmtree(root / ".pivot")
    (root / "x.txt").write_text("x")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "no project")


# -- post-checkout / post-merge ------------------------------------------------------------------


def feature_branch(project: Project) -> None:
    project.git("checkout", "-q", "-b", "feature")
    project.write("data/raw.txt", "feature\n")
    project.pivot("run")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "feature data")


def test_branch_switch_restores_outputs(project: Project) -> None:
    setup(project)
    feature_branch(project)
    assert project.read("data/loud.txt") == "FEATURE\nFEATURE\n"
    proc = git(project.root, "checkout", "main")
    assert project.read("data/loud.txt") == "HELLO\nHELLO\n"
    assert project.read("data/final.txt") == "HELLO\nHELLO\n!"
    assert "pivot: restored 2 output(s) to match the lock files" in proc.stderr
    git(project.root, "checkout", "feature")
    assert project.read("data/final.txt") == "FEATURE\nFEATURE\n!"
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout


def test_branch_switch_saves_a_modified_output_before_replacing_it(project: Project) -> None:
    setup(project)
    feature_branch(project)
    project.write("data/final.txt", "my hand edit\n")
    proc = git(project.root, "checkout", "main")
    assert project.read("data/final.txt") == "HELLO\nHELLO\n!"
    assert "data/final.txt had changes recorded in no lock file; they were saved in the cache" in proc.stderr
    saved = [p for p in project.cache_objects() if p.read_text() == "my hand edit\n"]
    assert saved, "the hand edit must be recoverable from the cache"


def test_branch_switch_with_objects_missing_names_them_and_succeeds(project: Project) -> None:
    setup(project)
    feature_branch(project)
    shutil.rmtree(project.root / ".pivot" / "cache")
    proc = git(project.root, "checkout", "main")  # exit 0 asserted by git()
    assert "2 output(s) are not in the local cache: data/loud.txt, data/final.txt" in proc.stderr
    assert "pivot pull" in proc.stderr


def test_merge_restores_outputs(project: Project) -> None:
    setup(project)
    feature_branch(project)
    git(project.root, "checkout", "-q", "main")
    project.write("README.md", "readme\n")
    project.git("add", "README.md")
    git(project.root, "commit", "-q", "-m", "readme")
    proc = git(project.root, "merge", "--no-edit", "feature")
    assert "pivot: restored 2 output(s)" in proc.stderr
    assert len(project.git("log", "-1", "--format=%P").split()) == 2, "a real merge commit"
    assert project.read("data/final.txt") == "FEATURE\nFEATURE\n!"


def test_post_checkout_user_hook_keeps_running_and_its_code_counts(project: Project) -> None:
    setup(project, hooks=False)
    marker = project.root / "post-checkout-ran"
    user_hook(hook_path(project, "post-checkout"), f'echo "$3" > "{marker}"\nexit 0\n')
    project.pivot("hooks", "install")
    feature_branch(project)
    assert marker.read_text().strip() == "1"
    marker.unlink()
    git(project.root, "checkout", "-q", "main")
    assert marker.exists()
    assert project.read("data/loud.txt") == "HELLO\nHELLO\n"


def test_linked_worktree_shares_the_hooks(project: Project, tmp_path: Path) -> None:
    setup(project)
    wt = tmp_path / "wt"
    proc = git(project.root, "worktree", "add", "-q", str(wt), "-b", "wt-branch")
    # its post-checkout ran there: a new work tree has an empty cache
    assert "not in the local cache" in proc.stderr
    assert not (project.root / ".git" / "worktrees" / "wt" / "hooks").exists()
    (wt / "pipeline.py").write_text(textwrap.dedent(PIPELINE).replace("SCALE = 2", "SCALE = 5"))
    git(wt, "add", "pipeline.py")
    proc = git(wt, "commit", "-q", "-m", "stale in worktree", check=False)
    assert "loud: stale" in proc.stderr
    # installing from the linked work tree changes nothing: same common git dir, same project
    out = subprocess.run([PIVOT, "hooks", "install"], cwd=wt, capture_output=True, text=True, check=True).stdout
    assert out.count("already installed at " + str(project.root / ".git" / "hooks")) == 4


def test_project_in_a_subfolder(tmp_path: Path) -> None:
    root = tmp_path / "mono"
    sub = root / "ml"
    sub.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    p = Project(sub)
    p.pivot("init")
    setup(p)
    assert "PROJECT='ml'" in (root / ".git" / "hooks" / "pre-commit").read_text()
    p.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 3"))
    git(root, "add", "-A")
    proc = git(root, "commit", "-q", "-m", "stale", check=False)
    assert "loud: stale" in proc.stderr


# -- pre-push -----------------------------------------------------------------------------------


def test_pre_push_names_the_objects_and_uploads_nothing_yet(project: Project, tmp_path: Path) -> None:
    setup(project)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    project.git("remote", "add", "origin", str(remote))
    proc = git(project.root, "push", "-q", "origin", "main")
    assert "the 1 commit(s) being pushed need 2 cache object(s) for 2 output(s)" in proc.stderr
    assert "no Pivot remote is configured, so none were uploaded" in proc.stderr
    feature_branch(project)
    proc = git(project.root, "push", "-q", "origin", "feature")
    assert "the 1 commit(s) being pushed need 2 cache object(s)" in proc.stderr  # main's commit is there
    proc = git(project.root, "push", "-q", "origin", "feature")
    assert "pivot:" not in proc.stderr  # nothing new to push


# -- pivot verify ---------------------------------------------------------------------------------


def test_verify_lists_stale_stages_and_exits_1(project: Project) -> None:
    setup(project, hooks=False)
    assert project.pivot("verify").stdout.strip() == "all 2 stage(s) match their lock files"
    project.write("data/raw.txt", "new\n")
    proc = project.pivot("verify", check=False)
    assert proc.returncode == 1
    assert "loud: stale\n    - dep 'data/raw.txt' changed\n    fix: pivot run loud" in proc.stdout
    assert proc.stderr.startswith("error: 2 of 2 stage(s) stale")
    data = __import__("json").loads(project.pivot("verify", "--json", check=False).stdout)
    assert data["ok"] is False and [s["stage"] for s in data["stale"]] == ["loud", "final"]


def test_verify_fails_on_a_metric_that_does_not_match(project: Project) -> None:
    setup(project, hooks=False)
    project.write("metrics.json", '{"chars": 1}\n')
    proc = project.pivot("verify", "--json", check=False)
    data = __import__("json").loads(proc.stdout)
    assert [m["path"] for m in data["metrics"]] == ["metrics.json"]
    assert "metric(s) do not match their lock" in proc.stderr


def test_verify_passes_in_a_fresh_clone_without_outputs(project: Project, tmp_path: Path) -> None:
    setup(project, hooks=False)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project.root), str(clone)], check=True)
    proc = subprocess.run([PIVOT, "verify"], cwd=clone, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "all 2 stage(s) match their lock files\nnote: 2 output(s) are missing or modified here" in proc.stdout


# -- the pre-commit framework -------------------------------------------------------------------


def test_pre_commit_framework_runs_pivot_verify(project: Project, tmp_path: Path) -> None:
    pre_commit = Path(sys.executable).parent / "pre-commit"
    if not pre_commit.exists():
        pytest.skip("the pre-commit package is not installed (pip install -e '.[test]')")
    setup(project, hooks=False)
    # The framework clones hook repositories by path: a repo holding this checkout's manifest.
    hook_repo = tmp_path / "hook-repo"
    hook_repo.mkdir()
    shutil.copy(REPO / ".pre-commit-hooks.yaml", hook_repo)
    subprocess.run(["git", "init", "-q", str(hook_repo)], check=True)
    git(hook_repo, "add", "-A")
    git(hook_repo, "commit", "-q", "-m", "manifest")
    rev = git(hook_repo, "rev-parse", "HEAD").stdout.strip()
    project.write(".pre-commit-config.yaml", f"""
        repos:
          - repo: {hook_repo}
            rev: {rev}
            hooks:
              - id: pivot-verify
    """)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    subprocess.run([str(pre_commit), "install"], cwd=project.root, env=env, check=True, capture_output=True)
    project.git("add", ".pre-commit-config.yaml")
    git(project.root, "commit", "-q", "-m", "use pre-commit", env=env)

    project.write("pipeline.py", PIPELINE.replace("SCALE = 2", "SCALE = 3"))
    project.git("add", "pipeline.py")
    proc = git(project.root, "commit", "-m", "stale", check=False, env=env)  # git sends hook output to stderr
    assert "pivot verify" in proc.stderr and "Failed" in proc.stderr
    assert "loud: stale" in proc.stderr
    project.pivot("run")
    project.git("add", "-A")
    proc = git(project.root, "commit", "-m", "fresh", env=env)
    assert "pivot verify" in proc.stderr and "Passed" in proc.stderr


# -- shipping -------------------------------------------------------------------------------------


def test_repository_hooks_are_the_shipped_ones() -> None:
    from importlib.resources import files

    for hook in HOOKS:
        shipped = files("pivot").joinpath("resources", "hooks", hook).read_bytes()
        assert (REPO / "hooks" / hook).read_bytes() == shipped, f"hooks/{hook} differs from pivot/resources/hooks"
        assert os.access(REPO / "hooks" / hook, os.X_OK)
        assert subprocess.run(["sh", "-n", str(REPO / "hooks" / hook)]).returncode == 0


def test_wheel_contains_the_hooks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src)
    shutil.copytree(REPO / "pivot", src / "pivot", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                           str(src)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"could not build a wheel here (no build backend available?): {proc.stderr[-300:]}")
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("pivot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for hook in HOOKS:
        assert f"pivot/resources/hooks/{hook}" in names
