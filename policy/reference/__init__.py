"""Diffusion Policy reference checkpoints (real-stanford/diffusion_policy workspaces): read them
safely (:mod:`policy.reference.safe_load`) and convert them into runs of this project
(:mod:`policy.reference.convert`, ``rig policy import-reference``)."""
