"""Calibration: the network-helper contract and (later) the layer-by-layer driver."""

from gscore.calib.network_helper import NetworkHelper

__all__ = ["NetworkHelper"]
