"""1/2/4-bit packing: round trips, exact size, layout, and refusal of bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gscore.quant.bitpack import pack_bits, packed_length, unpack_bits


@st.composite
def codes_and_bits(draw):
    bits = draw(st.sampled_from([1, 2, 4]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=19))
    codes = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, (1 << bits) - 1)))
    return codes, bits


@given(codes_and_bits())
def test_unpack_inverts_pack_and_the_size_is_minimal(case):
    codes, bits = case
    packed = pack_bits(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (*codes.shape[:-1], -(-codes.shape[-1] * bits // 8))
    np.testing.assert_array_equal(unpack_bits(packed, bits, codes.shape[-1]), codes)


@given(codes_and_bits(), st.sampled_from([np.int8, np.int32, np.int64, np.uint16]))
def test_any_integer_dtype_packs_the_same(case, dtype):
    codes, bits = case
    np.testing.assert_array_equal(pack_bits(codes.astype(dtype), bits), pack_bits(codes, bits))


def test_first_code_goes_to_the_lowest_bits():
    assert pack_bits([1, 2, 3, 0], 2).tolist() == [0b00_11_10_01]
    assert pack_bits([1, 0, 0, 0, 0, 0, 0, 1], 1).tolist() == [0b1000_0001]
    assert pack_bits([0xA, 0x5, 0xF], 4).tolist() == [0x5A, 0x0F]
    assert packed_length(9, 1) == 2 and packed_length(8, 1) == 1


@pytest.mark.parametrize("bits, bad", [(1, 2), (2, 4), (4, 16), (4, -1)])
def test_out_of_range_codes_are_refused(bits, bad):
    with pytest.raises(ValueError, match=f"{bits}-bit codes must be in"):
        pack_bits(np.array([0, bad]), bits)


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match=r"one of \(1, 2, 4\)"):
        pack_bits([0, 1], 3)
    with pytest.raises(TypeError, match="integer codes"):
        pack_bits(np.array([0.0, 1.0]), 1)
    with pytest.raises(ValueError, match="rank >= 1"):
        pack_bits(np.uint8(1), 2)
    with pytest.raises(TypeError, match="uint8"):
        unpack_bits(np.array([1], np.int8), 2, 4)
    with pytest.raises(ValueError, match="does not fit"):
        unpack_bits(np.array([1], np.uint8), 2, 5)
