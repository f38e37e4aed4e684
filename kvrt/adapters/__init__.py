"""The reference's adapters, by its class names and constructor arguments: typed values over any ``AsyncKeyValue``.

``PydanticAdapter``, ``BaseModelAdapter`` and ``DataclassAdapter`` need the ``pydantic`` extra
(``pip install 'kvrt[pydantic]'``); making one without it says so.
"""

from kvrt.adapters.pydantic import BaseModelAdapter, BasePydanticAdapter, DataclassAdapter, PydanticAdapter
from kvrt.adapters.raise_on_missing import RaiseOnMissingAdapter

__all__ = ["BaseModelAdapter", "BasePydanticAdapter", "DataclassAdapter", "PydanticAdapter", "RaiseOnMissingAdapter"]
