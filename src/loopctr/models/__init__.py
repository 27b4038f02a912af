"""Every model, importable from here and buildable by name.

The registry itself is `loopctr.models.registry` (model modules import `register` from there); this package
imports every model module, which registers it, and re-exports the registry and the model classes.
"""

from __future__ import annotations

from loopctr.models.base import CTRModel, ModelConfig
from loopctr.models.registry import MODELS, build_model, model_class, register

from loopctr.models.dnn import DNN  # (importing a model module registers it)
from loopctr.models.din import DIN
from loopctr.models.dcnv2 import DCNv2
from loopctr.models.dlrm import DLRM
from loopctr.models.wukong import Wukong
from loopctr.models.fat import FAT
from loopctr.models.hstu import HSTU
from loopctr.models.bst import BST
from loopctr.models.mtgr import MTGR
from loopctr.models.suan import SUAN
from loopctr.models.lightsuan import LightSUAN
from loopctr.models.onetrans import OneTrans
from loopctr.models.loopctr import LoopCTR

__all__ = ["MODELS", "register", "model_class", "build_model", "CTRModel", "ModelConfig", "DNN", "DIN", "DCNv2",
           "DLRM", "Wukong", "FAT", "HSTU", "BST", "MTGR", "SUAN", "LightSUAN", "OneTrans",
           "LoopCTR"]
