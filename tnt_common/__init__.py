"""Framework-free pieces shared by the PyTorch reference, the MindSpore port and the tools."""
