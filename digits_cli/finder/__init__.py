"""Finding every digit in a picture, normalising each the way MNIST was made, reading them in order.

Pure: arrays in, results out; the classifier is passed in as a function, so neither torch nor a
model is needed here. The pipeline, at a working resolution of at most ``segment.max_side`` and in
8-bit colour (exact enough for ink on paper, and several times faster than floats):

1. background (``paper``): on a thumbnail, a closing or an opening (as the ink is darker or
   lighter than the paper, judged against a local median) wipes out the strokes, so gradients,
   vignetting and coloured paper drop out whatever the ink polarity; a sheet lying on a darker
   desk is judged alone, and the desk is never ink;
2. contrast: each pixel's colour distance from that background, so dark-on-light, light-on-dark,
   coloured ink and coloured paper all become "ink strength";
3. ink (``ink``, ``forms``): hysteresis threshold above the picture's own noise level, labelled
   into components once; long thin straight lines (rules, underlines, margins) are cut out,
   judged by the pieces of ink touching them, while a lone bar of a digit's size stays (it is a
   1); printed form fields (boxes, combs, squared paper) are cut out whole, walls and all;
4. regions (``regions``, ``touching``): fragments of one digit (same colour, stacked closely)
   joined; regions too wide for a digit kept as digits touching, to be read split in halves or
   cut at the columns where touching digits likely meet;
5. each digit (``crop``): its own ink, scaled so its strokes are as thick as MNIST's, fitted in
   20x20 keeping the aspect ratio, anti-aliased, and centred by centre of mass in 28x28;
6. reading (``reading``, ``looks``, ``order``): classified in one batch (unsure wide regions
   split and read again), clutter judged against the page's own digits (faint, blobs, specks,
   hairs, boxes, bars cut by the border), then rows followed as chains of neighbours on the
   page's slope.
"""

from __future__ import annotations

from digits_cli.finder.order import arrange
from digits_cli.finder.reading import read_digits
from digits_cli.finder.regions import Candidate, find_digits
from digits_cli.finder.results import Box, Digit, Reading

__all__ = ["Box", "Candidate", "Digit", "Reading", "arrange", "find_digits", "read_digits"]
