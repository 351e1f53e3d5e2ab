"""The everyday commands on a converted checkpoint: ``tnt-validate``, ``tnt-predict``, ``tnt-export``."""
