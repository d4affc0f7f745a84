"""Reading a repository with git's plumbing only: branches by glob, the merge base, the commits of a branch,
and a file's content at a commit. Nothing here checks out or touches the working tree, so it is safe in a
dirty repository and in a CI clone."""

from __future__ import annotations

import fnmatch
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_S = 60


class GitError(RuntimeError):
    """git failed, or the repository cannot answer (not a repository, too shallow, unknown ref)."""


def git(repo: Path, *args: str, binary: bool = False) -> str | bytes:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GitError(f"git {' '.join(args)}: {e}") from None
    if proc.returncode:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout if binary else proc.stdout.decode(errors="replace").strip()


def toplevel(repo: Path) -> Path:
    try:
        return Path(str(git(repo, "rev-parse", "--show-toplevel")))
    except GitError:
        raise GitError(f"{repo}: not a git repository (pass --repo DIR)") from None


def repo_name(repo: Path) -> str:
    """The origin's name (owner/name from its URL) when there is one, else the folder's."""
    try:
        url = str(git(repo, "remote", "get-url", "origin"))
    except GitError:
        return toplevel(repo).name
    name = url.rstrip("/").removesuffix(".git").replace(":", "/").split("/")
    return "/".join(name[-2:]) if len(name) >= 2 else name[-1]


def is_shallow(repo: Path) -> bool:
    return str(git(repo, "rev-parse", "--is-shallow-repository")) == "true"


@dataclass(frozen=True)
class Branch:
    name: str  # as matched: "autoresearch/x" (a remote-tracking ref's name without its remote)
    ref: str  # what git resolves: "autoresearch/x" or "origin/autoresearch/x"
    head: str


def branches(repo: Path, globs: list[str]) -> tuple[list[Branch], list[str]]:
    """Local branches and remote-tracking ones (a CI clone has only the latter) whose name matches one of
    the globs; a local branch wins over a remote one of the same name. Returns (branches, globs that
    matched nothing)."""
    out = str(git(repo, "for-each-ref", "--format=%(refname)%00%(objectname)", "refs/heads", "refs/remotes"))
    local: dict[str, Branch] = {}
    remote: dict[str, Branch] = {}
    for line in out.splitlines():
        refname, _, sha = line.partition("\0")
        if refname.startswith("refs/heads/"):
            name = refname[len("refs/heads/"):]
            local[name] = Branch(name, name, sha)
        elif refname.startswith("refs/remotes/"):
            ref = refname[len("refs/remotes/"):]
            name = ref.partition("/")[2]
            if name and name != "HEAD":
                remote.setdefault(name, Branch(name, ref, sha))
    found = {**remote, **local}
    picked = {n: b for n, b in found.items() if any(fnmatch.fnmatchcase(n, g) for g in globs)}
    unmatched = [g for g in globs if not any(fnmatch.fnmatchcase(n, g) for n in found)]
    return [picked[n] for n in sorted(picked)], unmatched


def default_branch(repo: Path) -> str:
    """The repository's default branch: origin's HEAD when known, else main or master, else the current one."""
    try:
        return str(git(repo, "symbolic-ref", "--short", "refs/remotes/origin/HEAD"))
    except GitError:
        pass
    for name in ("main", "master"):
        try:
            git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}")
            return name
        except GitError:
            continue
    return str(git(repo, "rev-parse", "--abbrev-ref", "HEAD"))


def resolve(repo: Path, ref: str) -> str:
    try:
        return str(git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"))
    except GitError:
        raise GitError(f"{ref!r} is not a commit of {repo} (fetch it, or pass another --base)") from None


def merge_base(repo: Path, base: str, head: str) -> str:
    try:
        return str(git(repo, "merge-base", base, head))
    except GitError:
        if is_shallow(repo):
            raise GitError(f"{repo} is a shallow clone: the merge base of {head} and {base} is not in it. Fetch "
                           "the whole history (actions/checkout with fetch-depth: 0, or git fetch --unshallow)") \
                from None
        raise GitError(f"{head} and {base} have no common history") from None


def commits(repo: Path, base: str, head: str) -> list[str]:
    """The commits after base up to head along the first-parent line, oldest first."""
    out = str(git(repo, "rev-list", "--reverse", "--first-parent", f"{base}..{head}"))
    return out.split() if out else []


def blob_at(repo: Path, commit: str, path: str) -> str | None:
    """The blob hash of path at commit, None when the file is not there."""
    try:
        spec = str(git(repo, "ls-tree", commit, "--", path))
    except GitError:
        return None
    parts = spec.split()
    return parts[2] if len(parts) >= 3 and parts[1] == "blob" else None


def read_blob(repo: Path, blob: str, limit: int) -> bytes | None:
    """The blob's bytes; None when it is larger than limit (read no further)."""
    size = int(str(git(repo, "cat-file", "-s", blob)))
    if size > limit:
        return None
    data = git(repo, "cat-file", "blob", blob, binary=True)
    assert isinstance(data, bytes)
    return data


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    author_time: int
    parent: str | None


def commit_info(repo: Path, sha: str) -> CommitInfo:
    out = str(git(repo, "show", "-s", "--format=%H%x00%P%x00%at%x00%s", sha))
    full, parents, at, subject = (out.split("\0") + ["", "", "", ""])[:4]
    return CommitInfo(full, subject, int(at or 0), parents.split()[0] if parents.split() else None)
