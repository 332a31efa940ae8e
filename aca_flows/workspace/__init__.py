"""Workspace: the session branch, per-task git worktrees, commits, merges and the change log."""
