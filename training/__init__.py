"""Training and evaluation of TS-Net generators (not part of the installed `tsnet_hf` package).

    python training/preprocess.py VIDEOS --mode face --cache-dir cache/face-256
    python training/train.py --data VIDEOS --mode face --preset small --output runs/face-small
    python training/evaluate.py --checkpoint runs/face-small/final --data VIDEOS --output runs/eval

See training/README.md.
"""
