#!/usr/bin/env python3
"""Writes the image files that ImageFormatTests reads, with Pillow (and through it libjpeg and
libwebp), an encoder independent of the reader under test. Run from this folder:

    python3 make_fixtures.py        # Debian: apt-get install python3-pil

Every picture is drawn from a formula that the tests compute again in C# (ImageFormatTests.Colour,
.Grey, .Cmyk, .Bands), so a test compares what RawGan reads with the formula, not with another
decoder. Before writing, this script checks each file with Pillow's own decoder: lossless files
decode to the formula exactly, lossy ones within a small error, and each EXIF-oriented file,
turned upright by Pillow's exif_transpose, shows the upright picture.
"""
from PIL import Image, ImageOps

W, H = 32, 24  # the picture as shown; not square, so a turn that swaps the sides is seen


def colour(x, y):
    return (8 * x, 10 * y, 40 + 2 * x + 3 * y)


def grey(x, y):
    return 20 + 5 * x + 3 * y


def cmyk(x, y):
    # K = 0 in the upper rows and C = M = Y = 0 in the lower ones: there every CMYK to RGB
    # conversion agrees (R = 255 - C, and R = G = B = 255 - K).
    return (8 * x, 10 * y, 60, 0) if y < 20 else (0, 0, 0, 8 * x)


# 16 colours for the palette formats: index = x // 4 + 8 * (y // 12).
PALETTE = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
           (128, 0, 0), (0, 128, 0), (0, 0, 128), (128, 128, 0), (0, 128, 128), (128, 0, 128), (192, 192, 192), (64, 64, 64)]


def band(x, y):
    return x // 4 + 8 * (y // 12)


def draw(mode, f, size=(W, H)):
    im = Image.new(mode, size)
    im.putdata([f(x, y) for y in range(size[1]) for x in range(size[0])])
    return im


def palette_picture(f):
    im = Image.new('P', (W, H))
    im.putpalette([c for rgb in PALETTE for c in rgb] + [0] * (3 * (256 - len(PALETTE))))
    im.putdata([f(x, y) for y in range(H) for x in range(W)])
    return im


def mean_error(a, b):
    pa, pb = list(a.getdata()), list(b.getdata())
    flat = lambda p: [v for px in p for v in (px if isinstance(px, tuple) else (px,))]
    fa, fb = flat(pa), flat(pb)
    return sum(abs(u - v) for u, v in zip(fa, fb)) / len(fa)


def check(path, expected, lossy):
    got = Image.open(path)
    got.load()
    got = got.convert(expected.mode)
    error = mean_error(got, expected)
    assert got.size == expected.size and (error < 3 if lossy else error == 0), (path, error)


rgb = draw('RGB', colour)
rgb.save('colour.png'); check('colour.png', rgb, False)
rgb.save('baseline.jpg', quality=95, subsampling=0); check('baseline.jpg', rgb, True)
rgb.save('baseline-420.jpg', quality=90); check('baseline-420.jpg', rgb, True)
rgb.save('progressive.jpg', quality=95, subsampling=0, progressive=True); check('progressive.jpg', rgb, True)
L = draw('L', grey)
L.save('grey.jpg', quality=95); check('grey.jpg', L, True)
C = draw('CMYK', cmyk)
C.save('cmyk.jpg', quality=95, subsampling=0); check('cmyk.jpg', C, True)
rgb.save('lossless.webp', lossless=True); check('lossless.webp', rgb, False)
rgb.save('lossy.webp', quality=90); check('lossy.webp', rgb, True)
rgba = draw('RGBA', lambda x, y: colour(x, y) + (255 - 7 * x,))
rgba.save('alpha.webp', lossless=True, exact=True); check('alpha.webp', rgba, False)
rgb.save('icon.ico', sizes=[(16, 16)])  # a format Skia reads and RawGan refuses
rgb.save('rgb24.bmp'); check('rgb24.bmp', rgb, False)
palette_picture(band).save('palette8.bmp'); check('palette8.bmp', palette_picture(band).convert('RGB'), False)

# A GIF of two frames: the first is the bands, the second every band's neighbour; index 15 is transparent.
first, second = palette_picture(band), palette_picture(lambda x, y: (band(x, y) + 1) % 15)
first.save('animated.gif', save_all=True, append_images=[second], duration=[100, 100], loop=0, transparency=15, disposal=1)
g = Image.open('animated.gif'); g.seek(0); g.load()
assert list(g.convert('RGBA').getdata()) == [PALETTE[band(x, y)] + ((0,) if band(x, y) == 15 else (255,)) for y in range(H) for x in range(W)]
assert g.n_frames == 2

# EXIF orientations: the file stores the picture so that turning it as its tag says shows `rgb`.
# Pillow's exif_transpose applies, for tag n, the operation TURN[n]; the stored picture is the inverse.
TURN = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
INVERSE = {**TURN, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
for n in range(1, 9):
    stored = rgb if n == 1 else rgb.transpose(INVERSE[n])
    exif = Image.Exif()
    exif[0x0112] = n
    for name, options, lossy in ((f'orientation-{n}.jpg', dict(quality=95, subsampling=0), True),
                                 (f'orientation-{n}.webp', dict(lossless=True), False)):
        stored.save(name, exif=exif.tobytes(), **options)
        shown = ImageOps.exif_transpose(Image.open(name))
        assert Image.open(name).getexif()[0x0112] == n
        assert shown.size == (W, H), (name, shown.size)
        error = mean_error(shown.convert('RGB'), rgb)
        assert error < 3 if lossy else error == 0, (name, error)
print('fixtures written')
