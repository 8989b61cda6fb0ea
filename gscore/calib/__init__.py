"""Calibration: the network-helper contract (with generic defaults) and the layer-by-layer driver."""

from gscore.calib.network_helper import NetworkHelper, NetworkHelperProtocol

__all__ = ["NetworkHelper", "NetworkHelperProtocol"]
