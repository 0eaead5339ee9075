#!/usr/bin/env bash
# Network Slimming (Liu et al., ICCV 2017) on CIFAR-10 with prunekit, one command per model.
# The paper's recipe: SGD, batch 64, lr 0.1 (x0.1 at 50% and 75%), 160 epochs of sparse training
# with the BN-L1 penalty s, a global |γ| threshold, 160 epochs of fine-tuning.
# Every stage lands in --out (dense/, sparse/, pruned/, finetuned/); re-run with --resume after
# an interruption: finished stages are skipped, an interrupted one resumes from its last epoch.
set -euo pipefail
DATA=${DATA:-cifar10:../shared/data/cifar10-jpeg.tar.gz}
EPOCHS=${EPOCHS:-160}

prunekit slim --model zoo:vgg19 --data "$DATA" --sparsity 1e-4 --percent 0.7 \
    --epochs "$EPOCHS" --finetune-epochs "$EPOCHS" --dense-epochs "$EPOCHS" \
    --out runs/slim-vgg19-p70 --resume

prunekit slim --model zoo:preresnet164 --data "$DATA" --sparsity 1e-5 --percent 0.4 \
    --epochs "$EPOCHS" --finetune-epochs "$EPOCHS" --out runs/slim-preresnet164-p40 --resume

prunekit slim --model zoo:densenet40 --data "$DATA" --sparsity 1e-5 --percent 0.4 \
    --epochs "$EPOCHS" --finetune-epochs "$EPOCHS" --out runs/slim-densenet40-p40 --resume

# The paper code's own threshold (no per-layer floor) for comparison: layers it would empty are
# reported instead of crashing. (This trains its own sparse model; bench/slimming.py compares
# the thresholds on one shared sparse checkpoint.)
prunekit slim --model zoo:vgg19 --data "$DATA" --sparsity 1e-4 --percent 0.7 --threshold reference \
    --epochs "$EPOCHS" --finetune-epochs "$EPOCHS" --out runs/slim-vgg19-p70-reference --resume
