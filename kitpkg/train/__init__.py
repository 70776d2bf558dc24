"""Training: LightningModule on timm, K-fold CV, OOF, test ensemble, TTA, LR finder, pseudo-labels, report."""
