"""Networks: the MinkUNet family (minkunet) and the ERDA pseudo-label head (pseudo_head)."""
