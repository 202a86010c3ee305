
import pytest
import torch

import geed
from geed.groups import (
    CyclicGroup,
    DihedralGroup,
    ReflectionGroup,
    TranslationGroup,
    get_group,
    rotate,
)
from tests.helpers import smooth_images


@pytest.mark.parametrize("name", ["C4", "D4", "flip", "C2", "D2", "T4"])
def test_composition_law_exact(name):
    g = get_group(name)
    x = torch.randn(3, 2, 12, 12, dtype=torch.float64)
    for i in range(len(g)):
        for j in range(len(g)):
            lhs = g.act(g.act(x, j), i)  # g_i (g_j x)
            rhs = g.act(x, g.compose(i, j))
            assert torch.equal(lhs, rhs), (name, i, j)


@pytest.mark.parametrize("name", ["C8", "D8"])
def test_composition_law_interpolated_is_approximate(name):
    g = get_group(name, mask=True)
    x = smooth_images(4)
    worst = 0.0
    for i in range(len(g)):
        for j in range(len(g)):
            lhs, rhs = g.act(g.act(x, j), i), g.act(x, g.compose(i, j))
            worst = max(worst, float((lhs - rhs).norm() / rhs.norm()))
    assert 0 < worst < 0.1  # interpolation makes it inexact, but close on smooth images


def test_identity_first_and_inverses():
    for name in ["C8", "D4", "flip", "T3"]:
        g = get_group(name)
        assert g.elements[0].is_identity
        for i in range(len(g)):
            assert g.compose(i, g.inverse(i)) == 0
    # exact: every element a permutation of pixels (quarter turns, flips, shifts); C8's 45 degrees interpolate
    assert [get_group(n).is_exact for n in ("C4", "D4", "flip", "T3", "C8", "D8", "C16")] == [True] * 4 + [False] * 3


def test_rotation_direction_matches_rot90():
    x = torch.randn(2, 1, 11, 11, dtype=torch.float64)
    c8 = CyclicGroup(8)
    assert torch.equal(c8.act(x, 2), torch.rot90(x, 1, dims=(-2, -1)))
    # bilinear rotation by 90 through grid_sample matches rot90 (direction check of the interpolation path)
    y = rotate(x, 90.0 + 1e-9)
    assert torch.allclose(y, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6)


def test_an_interpolated_rotation_of_an_oblong_image_keeps_distances_in_pixels():
    """On a 21 x 41 image (C3 and C6 may act on oblong images: they have no quarter turn) a blob 8 pixels
    right of the centre, rotated by 60 degrees counter-clockwise on screen, lands 8 pixels from the
    centre at 60 degrees up and to the right; rotating in the grid's normalised coordinates instead
    would squash it by the aspect ratio (to about 5.5 pixels)."""
    img = torch.zeros(1, 1, 21, 41, dtype=torch.float64)
    img[0, 0, 9:12, 27:30] = 1.0
    out = rotate(img, 60.0)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(21.0, dtype=torch.float64), torch.arange(41.0, dtype=torch.float64), indexing="ij")
    mass = out.sum()
    dx, dy = float((out * xs).sum() / mass) - 20, float((out * ys).sum() / mass) - 10
    assert dx == pytest.approx(8 * 0.5, abs=0.1) and dy == pytest.approx(-8 * 3**0.5 / 2, abs=0.1)


@pytest.mark.parametrize("group_name, n, flip", [("C8", 8, False), ("D4", 4, True)])
def test_the_action_on_images_and_on_regular_fields_is_e2cnns(group_name, n, flip):
    """Our element k (and the flip) acts on an input image and on a regular feature field exactly as
    e2cnn's ``GeometricTensor.transform`` does with the same rotation: the same spatial direction and
    the same channel permutation (e2cnn transforms grids only by multiples of 90 degrees)."""
    from e2cnn import gspaces
    from e2cnn import nn as enn

    from geed.actions import field_type_action

    gspace = gspaces.FlipRot2dOnR2(n) if flip else gspaces.Rot2dOnR2(n)
    ours = get_group(group_name)
    trivial, regular = enn.FieldType(gspace, [gspace.trivial_repr]), enn.FieldType(gspace, [gspace.regular_repr])
    x = torch.randn(2, 1, 9, 9)
    h = torch.randn(2, regular.size, 9, 9)
    action = field_type_action(ours, regular)
    checked = 0
    for i, e in enumerate(ours.elements):
        if e.angle % 90:
            continue
        k = int(round(e.angle / (360 / n))) % n
        element = (int(e.flip), k) if flip else k
        assert torch.allclose(ours.act(x, i), enn.GeometricTensor(x, trivial).transform(element).tensor, atol=1e-6), e
        assert torch.allclose(action.act(h, i), enn.GeometricTensor(h, regular).transform(element).tensor, atol=1e-6), e
        checked += 1
    assert checked == (8 if flip else 4)


def test_flip_is_left_right_mirror():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert torch.equal(ReflectionGroup().act(x, 1), torch.flip(x, dims=(-1,)))
    assert len(ReflectionGroup()) == 2 and len(DihedralGroup(8)) == 16


def test_mask_zeroes_corners():
    g = get_group("C8", mask=True)
    x = torch.ones(1, 1, 29, 29)
    y = g.act(x, 0)
    assert y[0, 0, 0, 0] == 0 and y[0, 0, 14, 14] == 1


def test_unknown_group_and_angle_errors():
    with pytest.raises(ValueError, match="unknown group 'Q7'"):
        get_group("Q7")
    with pytest.raises(ValueError, match="not in C4"):
        get_group("C4").element_index_for_angle(45)
    assert get_group("C8").element_index_for_angle(135) == 3
    with pytest.raises(IndexError):
        get_group("C4").act(torch.zeros(1, 1, 3, 3), 4)
    with pytest.raises(ValueError, match="shape"):
        get_group("C4").act(torch.zeros(3), 1)


def test_translation_on_downsampled_layer():
    g = TranslationGroup(4, step=2, input_width=8)
    y = torch.arange(4.0).reshape(1, 1, 1, 4)
    assert torch.equal(g.act(y, 1), torch.roll(y, 1, dims=-1))
    g3 = TranslationGroup(4, step=3, input_width=8)
    with pytest.raises(ValueError, match="whole number"):
        g3.act(y, 1)
    with pytest.raises(ValueError, match="multiple of the width"):
        TranslationGroup(4, step=3).act(torch.zeros(1, 1, 9, 9), 1)


def test_actions_take_a_group_or_its_name_and_wrong_arguments_are_refused_by_name():
    from geed.actions import InducedAction, SpatialAction

    assert SpatialAction("C8").group.name == "C8" and len(SpatialAction("D4").group) == 8
    induced = InducedAction.by_angle(geed.get_group("C8"), SpatialAction("C4"))
    assert InducedAction("C8", induced.target, induced.hom).hom == induced.hom
    with pytest.raises(TypeError, match="a group is given by name.*int"):
        SpatialAction(8)
    with pytest.raises(TypeError, match="mask must be True or False; got 'yes'"):
        geed.get_group("C8", mask="yes")
    # the mask asked for is never dropped silently
    assert geed.get_group(geed.get_group("C8", mask=True), mask=True).mask
    assert not geed.get_group(geed.get_group("C8"), mask=False).mask
    with pytest.raises(ValueError, match="mask=True, but the group given .* acts without the input mask"):
        geed.get_group(geed.get_group("C8"), mask=True)
    with pytest.raises(ValueError, match="T3 shifts images.*use mask=False"):
        geed.get_group("T3", mask=True)
    with pytest.raises(TypeError, match="field_type must be an e2cnn FieldType.*str"):
        geed.field_type_action("C8", "regular")
