"""The model interface every CTR model implements.

A model is built from a schema, the vocabulary sizes and its dataclass config; `forward(batch)` takes a
`data.batch.Batch` and returns a dict with `logits` (B,) and optionally `logits_by_depth` (depths, B) and
`aux_loss` (a scalar added to the training loss). Models never read files and know nothing of the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from loopctr.data.dataset import CONTENT, CROSS, cross_vector_name
from loopctr.data.schema import Schema, parse_pair
from loopctr.errors import UserError
from loopctr.layers.apg import APGSpec
from loopctr.layers.content_interest import ContentInterest
from loopctr.layers.embedding import FeatureEmbedding
from loopctr.layers.mlp import ACTIVATIONS, MLP


@dataclass
class ModelConfig:
    embedding_dim: int = 64
    # pretrained vectors of a prepared dataset (e.g. KuaiVideo_x1's visual item embeddings), FuxiCTR's usages:
    # "init" (the vectors, through a trainable Linear when their size is not embedding_dim), "sum" (an id
    # embedding plus the projected vectors), "concat" (both, concatenated and projected), "none" (not used)
    pretrained_usage: Literal["init", "sum", "concat", "none"] = "init"
    pretrained_freeze: bool = True  # the vectors themselves are not trained
    # vocabularies (named by their field, e.g. [item_id]) embedded by binary-code hash tables
    # (layers/hash_embedding.py) about hash_compression times smaller than one row per id
    hash_embedding: list[str] = field(default_factory=list)
    hash_compression: float = 10.0
    # vocabularies whose values get their own embedding size from their training frequency (layers/amtl.py)
    amtl: list[str] = field(default_factory=list)
    amtl_size_penalty: float = 0.01  # x the mean kept fraction of the batch's values, added to the loss
    amtl_hidden: int = 32  # units of each twin MLP
    amtl_temperature: float = 1.0
    # pairs of categorical fields ("user_id:item_id") whose pre-trained cross features (`loopctr pretrain-cross`,
    # layers/cross_features.py) join the model's inputs as numeric fields
    cross_features: list[str] = field(default_factory=list)

    def validate(self):
        if self.embedding_dim < 1:
            raise UserError("model.embedding_dim must be >= 1")
        if self.hash_compression < 1:
            raise UserError(f"model.hash_compression must be >= 1, got {self.hash_compression}")
        if self.amtl_size_penalty < 0 or self.amtl_hidden < 1 or self.amtl_temperature <= 0:
            raise UserError("model.amtl_size_penalty must be >= 0, model.amtl_hidden >= 1, model.amtl_temperature > 0")
        for pair in self.cross_features:
            parse_pair(pair)
        if len(set(self.cross_features)) < len(self.cross_features):
            raise UserError(f"model.cross_features lists a pair twice: {self.cross_features}")
        for name in ("activation", "dnn_activation", "attention_activation"):
            value = getattr(self, name, None)
            if value is not None and value.lower() not in ACTIVATIONS:
                raise UserError(f"model.{name}: '{value}' is not one of {list(ACTIVATIONS)}")
        for name in ("dropout", "dnn_dropout", "attention_dropout"):
            value = getattr(self, name, None)
            if value is not None and not 0.0 <= value < 1.0:
                raise UserError(f"model.{name} must be in [0, 1)")


@dataclass
class APGConfig(ModelConfig):
    """Models whose MLP layers can generate their weights per sample (layers/apg.py, `model.apg=...`)."""
    apg: Literal["off", "self", "fields", "mix"] = "off"  # condition: the layer's input, apg_fields, or both
    apg_fields: list[str] = field(default_factory=list)  # the fields whose embeddings condition ("fields", "mix")
    apg_rank: int = 32  # k: each sample's generated matrix is k x k
    apg_overparam: int = 0  # p > k: U trained as a product (in x p)(p x k); 0: off
    apg_hypernet_units: int = 64  # the hypernetwork's hidden ReLU layer; 0: one Linear
    apg_generate_bias: bool = True

    def validate(self):
        super().validate()
        if self.apg_rank < 1 or self.apg_hypernet_units < 0 or self.apg_overparam < 0:
            raise UserError("model.apg_rank must be >= 1, model.apg_hypernet_units and model.apg_overparam >= 0")
        if self.apg_overparam and self.apg_overparam <= self.apg_rank:
            raise UserError(f"model.apg_overparam ({self.apg_overparam}) must exceed model.apg_rank "
                            f"({self.apg_rank}), or be 0 (off)")
        if self.apg in ("fields", "mix") and not self.apg_fields:
            raise UserError(f"model.apg={self.apg} needs model.apg_fields (the fields that condition the weights)")
        if self.apg_fields and self.apg not in ("fields", "mix"):
            raise UserError(f"model.apg_fields is used only with model.apg=fields or mix (now {self.apg})")


@dataclass
class ContentConfig(ModelConfig):
    """Models that can read item content vectors (layers/content_interest.py; the dataset prepared with
    `--content VOCAB=FILE`)."""
    content_interest: bool = False  # the target's content attends over the history's, fused into the read-out
    content_dim: int = 0  # the content's projected size (0: embedding_dim)

    def validate(self):
        super().validate()
        if self.content_dim < 0:
            raise UserError(f"model.content_dim must be >= 0 (0: embedding_dim), got {self.content_dim}")


@dataclass
class MLPHeadConfig(APGConfig):
    """Settings of the MLP head most models end with (FuxiCTR's `dnn_*` names)."""
    dnn_hidden_units: list[int] = field(default_factory=lambda: [1024, 512, 256])
    dnn_activation: str = "relu"
    dnn_dropout: float = 0.1
    batch_norm: bool = True


@dataclass
class SequenceEncoderConfig(MLPHeadConfig):
    """Models that encode histories token by token, in groups of rows of similar length."""
    length_chunks: int = 16  # encode rows in this many groups of similar length (exact; only for speed; 1: off)


class CTRModel(nn.Module):
    config_class: type[ModelConfig] = ModelConfig

    def __init__(self, schema: Schema, vocab_sizes: dict[str, int], config: ModelConfig):
        super().__init__()
        self.schema = schema
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        self.embedding = FeatureEmbedding(schema, vocab_sizes, config.embedding_dim,
                                          hashed=config.hash_embedding, hash_compression=config.hash_compression,
                                          amtl=config.amtl, amtl_options=(config.amtl_hidden, config.amtl_temperature))
        self.apg = self._apg_spec()
        self.content: ContentInterest | None = None  # set by the models that read content (`content_interest`)

    def use_pretrained(self, dims: dict[str, int]) -> None:
        """Shape the tables of the dataset's vectors (`dims`: name -> vector size, `data.dataset._vector_files`):
        pretrained-vector tables for vocabularies, as configured; content vectors ("content:<vocab>") for the
        content interest module, when the model has one (others ignore them). Called by `build_model` always,
        so that a model asking for content or cross features on a dataset without them says so."""
        c = self.config
        tables = {name: dim for name, dim in dims.items() if not name.startswith((CONTENT, CROSS))}
        if tables and c.pretrained_usage != "none":
            self.embedding.use_pretrained(tables, c.pretrained_usage, c.pretrained_freeze)
        cross = self.embedding.cross
        for pair, fields in (cross.pairs.items() if cross is not None else ()):
            missing = [s for s in cross.SIDES if cross_vector_name(pair, s) not in dims]
            if missing:
                raise UserError(f"model.cross_features: the dataset has no pre-trained cross features for '{pair}' "
                                f"(has {sorted({n[len(CROSS):].rsplit('@', 1)[0] for n in dims if n.startswith(CROSS)})}"
                                f"); run `loopctr pretrain-cross DATA --pairs {pair}`")
            cross.attach(pair, *[(self.vocab_sizes[self.schema.field(f).vocab], dims[cross_vector_name(pair, s)])
                                 for f, s in zip(fields, ("left", "right"))])
        content = self.content
        if content is None:
            return
        have = {name[len(CONTENT):]: dim for name, dim in dims.items() if name.startswith(CONTENT)}
        pairs = [(t, s) for t, s in self.schema.sequence_targets() if self.schema.field(t).vocab in have]
        if not pairs:
            raise UserError(f"model.content_interest needs content vectors for a vocabulary shared by a target field "
                            f"and its history ({self.schema.sequence_targets()}); the dataset has "
                            f"{sorted(have) or 'none'}: prepare it with --content VOCAB=FILE")
        target, history = pairs[0]
        vocab = self.schema.field(target).vocab
        content.attach(self.embedding.tables[vocab].num_embeddings, have[vocab], target, history)

    def load_vectors(self, vectors: dict) -> None:
        """Copy the dataset's vectors (name -> array, as `use_pretrained` named them) into their tables."""
        self.embedding.load_pretrained({n: v for n, v in vectors.items() if not n.startswith((CONTENT, CROSS))})
        cross = self.embedding.cross
        for pair in (cross.pairs if cross is not None else ()):
            cross.load(pair, {side: vectors[cross_vector_name(pair, side)] for side in cross.SIDES})
        content = self.content
        if content is not None:
            content.load(vectors[CONTENT + self.schema.field(content.target_field).vocab])

    def content_interest(self, event_dim: int) -> ContentInterest | None:
        """The content interest module of a ContentConfig model (None when off); its output joins the read-out."""
        c = self.config
        if not isinstance(c, ContentConfig) or not c.content_interest:
            return None
        return ContentInterest(c.content_dim or c.embedding_dim, event_dim)

    def reset_parameters(self):
        """FuxiCTR's initialisation: Xavier-normal Linear weights, zero biases; embeddings N(0, 1e-4)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.embedding.reset_parameters()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss and its parts (for logging). Mean BCE on the logits, plus any auxiliary loss."""
        loss = F.binary_cross_entropy_with_logits(outputs["logits"], labels)
        return self.add_auxiliary(loss, {"bce": loss.detach()}, outputs)

    def add_auxiliary(self, loss: torch.Tensor, parts: dict, outputs: dict) -> tuple[torch.Tensor, dict]:
        """The task loss plus the model's auxiliary losses (`aux_loss` of the outputs; AMTL's size price)."""
        if "aux_loss" in outputs:
            loss = loss + outputs["aux_loss"]
            parts["aux"] = outputs["aux_loss"].detach()
        kept = []
        for table in self.embedding.amtl_tables().values():  # this step's lookups, taken once
            kept += table.kept_fractions
            table.kept_fractions = []
        if kept and self.config.amtl_size_penalty > 0:
            size = torch.stack(kept).mean()
            loss = loss + self.config.amtl_size_penalty * size
            parts["amtl_kept"] = size.detach()
        return loss, parts

    def mlp_head(self, input_dim: int) -> MLP:
        """The MLP head of an MLPHeadConfig, ending in one logit."""
        c = self.config
        return MLP(input_dim, c.dnn_hidden_units, c.dnn_activation, c.dnn_dropout, c.batch_norm, output_dim=1,
                   apg=self.apg)

    def _apg_spec(self) -> APGSpec | None:
        c = self.config
        if not isinstance(c, APGConfig) or c.apg == "off":
            return None
        unknown = [f for f in c.apg_fields if f not in self.schema.field_names]
        if unknown:
            raise UserError(f"model.apg_fields: {unknown} are not fields of the schema ({self.schema.field_names})")
        return APGSpec(c.apg, c.embedding_dim * len(c.apg_fields), c.apg_rank, c.apg_overparam,
                       c.apg_hypernet_units, c.apg_generate_bias)

    def apg_condition(self, batch) -> torch.Tensor | None:
        """The embeddings of `model.apg_fields`, concatenated (sequences mean-pooled): the condition of the APG
        layers in the modes that use fields; None otherwise."""
        if self.apg is None or self.apg.mode == "self":
            return None
        return torch.cat(self.embedding.pooled(batch, self.config.apg_fields), dim=-1)

    def skips_parameters(self) -> bool:
        """True when a step may leave some parameters without gradient (e.g. an expert no token chose);
        DDP must then look for unused parameters."""
        return False

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [m.weight for m in self.modules() if isinstance(m, nn.Embedding)]

    def parameter_counts(self) -> dict[str, int]:
        emb = {id(p) for p in self.embedding_parameters()}
        counts = {"embedding": 0, "dense": 0}
        for p in self.parameters():
            counts["embedding" if id(p) in emb else "dense"] += p.numel()
        return counts

    # depths (looped models) -------------------------------------------------------------------------
    def trained_depths(self) -> int | None:
        """How many depths a looped model is trained at; None for a model without depths. A model with depths
        takes `forward(batch, depths=[...])` in inference: `logits_by_depth` (depths, B) for exactly those
        depths, `logits` the last of them."""
        return None

    def inference_depth(self) -> int | None:
        """The depth whose predictions a looped model serves by default (None: no depths)."""
        return None
