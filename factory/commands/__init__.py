"""What the CLI's commands do beyond dispatching (they may use the runner): `factory review export|import`."""
