"""Deployment: run a trained policy on the rig with latency-compensated action chunks.

``scheduler`` (stamping, feasibility, no-burst fallback, async commit plan), ``safety`` (chunk-level
checks), ``policy_client`` / ``inference_process`` / ``serving`` (where inference runs), ``runner``
(the loop, takeover, evaluation recording), ``deploy_cli`` (``rig deploy``), ``evaluation`` (timing
metrics), ``standin`` (a reference-trajectory policy for tests and benchmarks).
"""
