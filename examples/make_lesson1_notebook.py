"""Writes examples/lesson1.ipynb: lesson 1 (Dogs vs Cats) of the 2018 fast.ai course, step by
step with the original calls and variable names, running on fastai-rs.

The cells live here as plain strings so that they are easy to review and diff; run
`python examples/make_lesson1_notebook.py` after editing and commit both files
(tests/python/test_notebook.py checks that they agree).

Two environment variables let a test run the notebook on a small copy of the data without
changing the lesson's names: LESSON1_PATH (default 'data/dogscats/') and LESSON1_SZ (224).
"""
import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "lesson1.ipynb")

# (kind, source): "md" for markdown, "code" for code.
CELLS = [
    ("md", """\
# Lesson 1: what's your pet (Dogs vs Cats)

The 2018 fast.ai lesson 1, run on fastai-rs: the same imports, names and calls as the course
notebook, with the training loop and data pipeline in Rust."""),
    ("code", """\
# Put these at the top of every notebook, to get automatic reloading and inline plotting
%reload_ext autoreload
%autoreload 2
%matplotlib inline"""),
    ("md", "Everything the lesson uses comes from these star imports, as in the original:"),
    ("code", """\
from fastai.imports import *
from fastai.transforms import *
from fastai.conv_learner import *
from fastai.model import *
from fastai.dataset import *
from fastai.sgdr import *
from fastai.plots import *"""),
    ("md", """\
`PATH` is where the data is (with a trailing slash: the helpers below build file names as
`PATH + fname`), `sz` the size the images are resized to. Both can be overridden from the
environment (LESSON1_PATH, LESSON1_SZ), e.g. to try the notebook on a small sample."""),
    ("code", """\
PATH = os.environ.get('LESSON1_PATH', 'data/dogscats/')
sz = int(os.environ.get('LESSON1_SZ', 224))"""),
    ("md", "Training is much faster on a GPU; everything also runs on the CPU."),
    ("code", "torch.cuda.is_available()"),
    ("code", "torch.backends.cudnn.enabled"),
    ("md", "## Look at the data\n\nOne folder per split, one sub-folder per class:"),
    ("code", "os.listdir(PATH)"),
    ("code", "os.listdir(f'{PATH}valid')"),
    ("code", """\
files = os.listdir(f'{PATH}valid/cats')[:5]
files"""),
    ("code", """\
img = plt.imread(f'{PATH}valid/cats/{files[0]}')
plt.imshow(img);"""),
    ("md", "An image is an array of rows × columns × 3 channels (red, green, blue) of bytes:"),
    ("code", "img.shape"),
    ("code", "img[:4,:4]"),
    ("md", """\
## Our first model: quick start

A ResNet-34 pretrained on ImageNet, with a new head for our two classes. With
`precompute=True` the backbone's activations are computed once and cached in `PATH/tmp`,
so training the head takes seconds."""),
    ("code", """\
# Uncomment the below if you need to reset your precomputed activations
# shutil.rmtree(f'{PATH}tmp', ignore_errors=True)"""),
    ("code", """\
arch=resnet34
data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(arch, sz))
learn = ConvLearner.pretrained(arch, data, precompute=True)
learn.fit(0.01, 2)"""),
    ("md", "## Analyzing results: looking at pictures\n\nThe labels of the validation set:"),
    ("code", "data.val_y"),
    ("code", "# from here we know that 'cats' is label 0 and 'dogs' is label 1.\ndata.classes"),
    ("code", """\
# this gives prediction for validation set. Predictions are in log scale
log_preds = learn.predict()
log_preds.shape"""),
    ("code", "log_preds[:10]"),
    ("code", """\
preds = np.argmax(log_preds, axis=1)  # from log probabilities to 0 or 1
probs = np.exp(log_preds[:,1])        # pr(dog)"""),
    ("md", """\
Helpers to pick and show validation images. They pick at most 4 (fewer when a small sample
has fewer matching images)."""),
    ("code", """\
def rand_by_mask(mask):
    idxs = np.where(mask)[0]
    return np.random.choice(idxs, min(4, len(idxs)), replace=False)

def rand_by_correct(is_correct): return rand_by_mask((preds == data.val_y)==is_correct)"""),
    ("code", """\
def plots(ims, figsize=(12,6), rows=1, titles=None):
    f = plt.figure(figsize=figsize)
    for i in range(len(ims)):
        sp = f.add_subplot(rows, max(len(ims)//rows, 1), i+1)
        sp.axis('Off')
        if titles is not None: sp.set_title(titles[i], fontsize=16)
        plt.imshow(ims[i])"""),
    ("code", """\
def plot_val_with_title(idxs, title):
    print(title)
    if len(idxs) == 0: return print('(no such image)')
    imgs = np.stack([data.val_ds[x][0] for x in idxs])
    title_probs = [probs[x] for x in idxs]
    return plots(data.val_ds.denorm(imgs), rows=1, titles=title_probs)"""),
    ("code", """\
# 1. A few correct labels at random
plot_val_with_title(rand_by_correct(True), "Correctly classified")"""),
    ("code", """\
# 2. A few incorrect labels at random
plot_val_with_title(rand_by_correct(False), "Incorrectly classified")"""),
    ("md", "The same images at their original size, straight from the files:"),
    ("code", """\
def load_img_id(ds, idx): return np.array(PIL.Image.open(PATH+ds.fnames[idx]))

def plot_val_with_title(idxs, title):
    print(title)
    if len(idxs) == 0: return print('(no such image)')
    imgs = [load_img_id(data.val_ds,x) for x in idxs]
    title_probs = [probs[x] for x in idxs]
    return plots(imgs, rows=1, titles=title_probs, figsize=(16,8))"""),
    ("code", """\
def most_by_mask(mask, mult):
    idxs = np.where(mask)[0]
    return idxs[np.argsort(mult * probs[idxs])[:4]]

def most_by_correct(y, is_correct):
    mult = -1 if (y==1)==is_correct else 1
    return most_by_mask(((preds == data.val_y)==is_correct) & (data.val_y == y), mult)"""),
    ("code", 'plot_val_with_title(most_by_correct(0, True), "Most correct cats")'),
    ("code", 'plot_val_with_title(most_by_correct(1, True), "Most correct dogs")'),
    ("code", 'plot_val_with_title(most_by_correct(0, False), "Most incorrect cats")'),
    ("code", 'plot_val_with_title(most_by_correct(1, False), "Most incorrect dogs")'),
    ("code", """\
most_uncertain = np.argsort(np.abs(probs -0.5))[:4]
plot_val_with_title(most_uncertain, "Most uncertain predictions")"""),
    ("md", """\
## Choosing a learning rate

`lr_find` trains for at most one epoch while the learning rate grows exponentially, records
the loss, and then puts the weights back as they were."""),
    ("code", "learn = ConvLearner.pretrained(arch, data, precompute=True)"),
    ("code", "lrf=learn.lr_find()"),
    ("code", "learn.sched.plot_lr()"),
    ("md", "Pick a rate where the loss still clearly falls, before it bottoms out:"),
    ("code", "learn.sched.plot()"),
    ("md", """\
## Improving our model: data augmentation

Random zoom, rotation, lighting and horizontal flips of the training images. Six random
versions of the same validation image:"""),
    ("code", "tfms = tfms_from_model(resnet34, sz, aug_tfms=transforms_side_on, max_zoom=1.1)"),
    ("code", """\
def get_augs():
    data = ImageClassifierData.from_paths(PATH, bs=2, tfms=tfms, num_workers=1)
    x,_ = next(iter(data.aug_dl))
    return data.trn_ds.denorm(x)[1]"""),
    ("code", "ims = np.stack([get_augs() for i in range(6)])"),
    ("code", "plots(ims, rows=2)"),
    ("code", """\
data = ImageClassifierData.from_paths(PATH, tfms=tfms)
learn = ConvLearner.pretrained(arch, data, precompute=True)"""),
    ("code", "learn.fit(1e-2, 1)"),
    ("md", """\
The cached activations were computed from un-augmented images, so augmentation only takes
effect once precompute is off:"""),
    ("code", "learn.precompute=False"),
    ("md", """\
`cycle_len=1` restarts the learning rate every epoch and anneals it along a cosine within
each epoch (SGDR):"""),
    ("code", "learn.fit(1e-2, 3, cycle_len=1)"),
    ("code", "learn.sched.plot_lr()"),
    ("code", "learn.save('224_lastlayer')"),
    ("code", "learn.load('224_lastlayer')"),
    ("md", """\
## Fine-tuning and differential learning rate annealing

Unfreeze the whole network and train the early layers with smaller learning rates than the
later ones. With `cycle_mult=2` each cycle is twice as long as the previous one (1+2+4 = 7
epochs)."""),
    ("code", "learn.unfreeze()"),
    ("code", "lr=np.array([1e-4,1e-3,1e-2])"),
    ("code", "learn.fit(lr, 3, cycle_len=1, cycle_mult=2)"),
    ("code", "learn.sched.plot_lr()"),
    ("code", "learn.sched.plot_loss()"),
    ("code", "learn.save('224_all')"),
    ("code", "learn.load('224_all')"),
    ("md", """\
Test-time augmentation: predictions on the original validation images and on 4 augmented
versions of each, averaged as probabilities:"""),
    ("code", "log_preds,y = learn.TTA()\nprobs = np.mean(np.exp(log_preds),0)"),
    ("code", "accuracy_np(probs, y)"),
    ("md", "## Analyzing results\n\nA confusion matrix (rows: true class, columns: prediction):"),
    ("code", "preds = np.argmax(probs, axis=1)\nprobs = probs[:,1]"),
    ("code", """\
from sklearn.metrics import confusion_matrix
cm = confusion_matrix(y, preds)"""),
    ("code", "plot_confusion_matrix(cm, data.classes)"),
    ("code", 'plot_val_with_title(most_by_correct(0, False), "Most incorrect cats")'),
    ("code", 'plot_val_with_title(most_by_correct(1, False), "Most incorrect dogs")'),
]


def build():
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                for kind, src in CELLS]
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell.id = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main(out=OUT):
    nb = build()
    nbformat.validate(nb)
    nbformat.write(nb, out)
    return out


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else OUT))
