"""The build pipeline: one module per stage (export, quantize, lower, vela, evaluate), the
stage shape they share (stage.py), their torch-free keys (keys.py), and build.py, which
runs them and publishes the artifact. Torch and ExecuTorch are imported inside stages only."""
