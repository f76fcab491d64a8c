"""Versioned upgrade steps: what an update must do once, beyond the schema migrations.

Each step is a file `versions/X.Y.Z.json` (or under DEVPUSH_UPGRADES_DIR) naming its reason
and actions. `devpush migrate` (so `up`, `update` and compose's one-off migration container
too) runs the steps not yet recorded, in version order, each once, and records them in the
`upgrade_steps` table; `devpush status` shows them. A failed step stops there: later ones wait,
and `devpush update` restarts nothing, so the running version keeps serving.
"""
