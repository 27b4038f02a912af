"""LoopCTR (Tang et al., arXiv 2604.19550): a loop-scaled sandwich Transformer for CTR prediction.

The paper's body and code are not public; this is a reconstruction from its abstract and its precedents
(see ../shared/reference/loopctr-and-peers.md, sections 1, 6, 7, 8). Every uncertain choice is a switch.

    tokens   = UnifiedTokenizer(fields)                     S-tokens, NS-tokens, target token(s) [, CLS]
    h        = Encode(tokens)                               n_encode non-shared layers
    for t in 1..k:                                          k = train_loops (training) or infer_loops
        h    = Loop(h, t)                                   one shared block of n_loop_layers layers (MoE FFN)
        logit_t = Head(Decode(h))                           n_decode non-shared layers + read-out + MLP,
                                                            shared by all depths (process supervision)
    loss     = sum_t w_t BCE(y, logit_t / tau_t) + moe_aux_weight * load-balancing loss

"LoopCTR(a/b)" infers with a passes of the loop block and trains with b (`infer_loops=a train_loops=b`);
"infer zero loop" is infer_loops=1: one pass of every layer, no repetition. The parameter count does not
depend on either, and inference runs exactly `infer_loops` passes of the loop block (plus the decode layers
once per reported depth; the last decode layer computes only the read-out tokens).

Residuals (`hc_mode`): "none" (plain pre-norm residuals), "hc" or "mhc" with `n_streams` streams, placed
around every attention and FFN sublayer (`hc_placement="layer"`, as in mHC; streams summed before the final
norm) or only around each pass of the loop block (`"loop"`, the default, as in Hyperloop Transformers: the
branch is the block's update block(h) - h, its own layers keep plain residuals, and the streams are summed
and divided by n before the decoder, which then sees the scale of one residual stream).

Reconstruction choices ([I]: not in any source we could read; each is a switch):
- sandwich 1 / 1 / 1 layers, d_model 64, 4 heads, SwiGLU 256, 6 experts top-1 + a shared expert, n_streams 4:
  0.56 M dense parameters on the x1 schema (the paper reports 0.59-1.15 M);
- depth t = t passes of the loop block; "zero loop" = one pass; the decoder and head are shared by all depths
  and every depth's logit goes through them, so the depth-1 path is trained directly;
- hyper-connections between loop passes by default (the reference's reading of "sandwich + Hyper-Connected
  Residuals"; per-layer mHC costs about twice as much on CPU); mHC constraints by default (the stable choice
  for a repeated map: doubly stochastic H_res keeps the streams' mean);
- supervision weights uniform (1/k each, so the loss scale does not depend on k); a per-depth temperature
  (ReaRec-PRL) divides depth t's logit by a^(k - t) in training *and* inference, so predictions stay calibrated;
- the MoE aux loss is averaged over loop passes and layers, weight 0.01 (Switch);
- the read-out is the target token after the decoder's last layer (which computes only the read-out tokens),
  RMS-normalised, through a ReLU MLP head (`readout="non_sequence"` flattens every non-sequence token into
  the head instead, as OneTrans does); the MoE router can see the loop index via a sinusoidal encoding
  (a table would tie the parameter count to the loop count).
`model.content_interest=true` concatenates the content interest (layers/content_interest.py) to every depth's
head input; it is computed once per row, before the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from loopctr.errors import UserError
from loopctr.layers.hyper_connections import collapse_streams, expand_streams, residual_site
from loopctr.layers.mlp import MLP
from loopctr.layers.moe import MoEFFN, loop_encoding
from loopctr.layers.tokenizer import UnifiedTokenizer
from loopctr.layers.packed import PackedTokens
from loopctr.layers.transformer import RMSNorm, TransformerLayer, reset_own_parameters, rms_norm
from loopctr.models.base import APGConfig, ContentConfig, CTRModel
from loopctr.models.registry import register

LOOP_FEATURES = 8  # sinusoidal features of the pass index (loop embedding)


@dataclass
class LoopCTRConfig(APGConfig, ContentConfig):
    embedding_dim: int = 64
    # -- sandwich ------------------------------------------------------------------------------------------
    d_model: int = 64
    n_heads: int = 4
    ffn_hidden: int = 256  # SwiGLU hidden size of the encode/decode layers (and of each expert by default)
    n_encode: int = 1
    n_loop_layers: int = 1  # layers in the shared loop block
    n_decode: int = 1
    train_loops: int = 3  # passes of the loop block in training (depths supervised: 1..train_loops)
    infer_loops: int = 1  # passes at inference; the model's `logits` are those of this depth
    dropout: float = 0.0  # on every residual branch output
    attention_dropout: float = 0.0
    attention_mask: Literal["full", "target_aware", "causal"] = "full"  # target_aware: history sees history only
    # -- tokenizer -----------------------------------------------------------------------------------------
    seq_grouping: Literal["aligned", "separate"] = "aligned"
    ns_tokenizer: Literal["field", "auto_split"] = "field"
    ns_tokens: int = 0  # auto_split: number of NS tokens (0: one per remaining field)
    position_embedding: bool = True
    type_embedding: bool = True
    cls_token: bool = False  # always add a CLS read-out token (it is added anyway when there is no target)
    embedding_norm: bool = False  # RMS-normalise categorical/sequence embeddings before the projections
    # read-out tokens, flattened into the head: "target" (target tokens and CLS) or "non_sequence" (every token
    # that is not a behaviour event: NS-tokens too, which keeps field identity on sequence-free data)
    readout: Literal["target", "non_sequence"] = "target"
    readout_pool: bool = False  # concatenate the mean of all real tokens to the read-out tokens
    # -- hyper-connected residuals -------------------------------------------------------------------------
    hc_mode: Literal["none", "hc", "mhc"] = "mhc"
    hc_placement: Literal["layer", "loop"] = "loop"
    n_streams: int = 4
    hc_dynamic: bool = True  # input-dependent coefficients (false: static only)
    hc_alpha_init: float = 0.01
    sinkhorn_iters: int = 20
    loop_state_norm: bool = False  # RMS-normalise the state after every loop pass
    # -- what makes passes differ (each conditions the loop block's input, never accumulates in the state) ---
    loop_embedding: bool = False  # a learned map of a sinusoidal encoding of the pass index (Hyperloop, UT)
    input_injection: bool = False  # the encoder output, re-added to the block's input at every pass (DEQ)
    # "random": every training batch runs n ~ U{1..train_loops} passes (LoopFormer-style elastic depth)
    loop_sampling: Literal["fixed", "random"] = "fixed"
    # -- mixture of experts (loop block FFN) ---------------------------------------------------------------
    n_experts: int = 6  # 1: a dense SwiGLU FFN
    moe_top_k: int = 1
    moe_shared_expert: bool = True
    moe_expert_hidden: int = 0  # 0: ffn_hidden
    moe_aux_weight: float = 0.01
    moe_loop_router: bool = False  # the router also sees (a sinusoidal encoding of) the loop index
    # -- process supervision -------------------------------------------------------------------------------
    supervision: Literal["uniform", "increasing", "final"] = "uniform"  # weights of the per-depth BCE
    depth_temperature: float = 1.0  # a >= 1: depth t's logit is divided by a^(train_loops - t) (1: off)
    # depth-wise self-distillation ("Be Your Own Teacher"): the deepest depth's detached probability (at
    # `distill_temperature`) is a soft target for every shallower depth, with this weight (0: off)
    distill_weight: float = 0.0
    distill_temperature: float = 1.0
    # -- head ----------------------------------------------------------------------------------------------
    head_hidden_units: list[int] = field(default_factory=lambda: [256, 128])
    activation: str = "relu"
    head_dropout: float = 0.0
    # attention over up to this many groups of samples of similar length, each group padded to its own longest
    # sample (exact; every other layer runs on the real tokens alone); 1: one grid padded to the batch's longest
    attention_groups: int = 8

    def validate(self):
        super().validate()
        for name in ("d_model", "n_heads", "ffn_hidden", "n_loop_layers", "train_loops", "infer_loops", "n_streams",
                     "n_experts", "moe_top_k", "attention_groups"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be >= 1")
        for name in ("n_encode", "n_decode", "ns_tokens", "moe_expert_hidden", "sinkhorn_iters"):
            if getattr(self, name) < 0:
                raise UserError(f"model.{name} must be >= 0")
        if self.d_model % self.n_heads:
            raise UserError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.moe_top_k > self.n_experts:
            raise UserError(f"model.moe_top_k ({self.moe_top_k}) cannot exceed model.n_experts ({self.n_experts})")
        for name in ("dropout", "attention_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"model.{name} must be in [0, 1)")
        if self.moe_aux_weight < 0:
            raise UserError("model.moe_aux_weight must be >= 0")
        if self.depth_temperature <= 0:
            raise UserError("model.depth_temperature must be > 0")
        if self.distill_weight < 0 or self.distill_temperature <= 0:
            raise UserError("model.distill_weight must be >= 0 and model.distill_temperature > 0")
        if self.hc_mode == "mhc" and self.sinkhorn_iters < 1:
            raise UserError("model.sinkhorn_iters must be >= 1 with hc_mode=mhc")
        if any(u < 1 for u in self.head_hidden_units):
            raise UserError("model.head_hidden_units must be positive")
        if self.apg in ("fields", "mix"):  # the read-out already carries every field; adaptive depth reads row subsets
            raise UserError(f"LoopCTR's head takes model.apg=self or off, not {self.apg}")


@register("loopctr")
class LoopCTR(CTRModel):
    config_class = LoopCTRConfig

    def __init__(self, schema, vocab_sizes, config: LoopCTRConfig):
        super().__init__(schema, vocab_sizes, config)
        c = config
        d = c.d_model
        self.tokenizer = UnifiedTokenizer(schema, c.embedding_dim, d, c.seq_grouping, c.ns_tokenizer, c.ns_tokens,
                                          c.position_embedding, c.type_embedding, c.cls_token, c.readout,
                                          c.embedding_norm)

        def layer(ffn=None):
            return TransformerLayer(d, c.n_heads, c.ffn_hidden, c.dropout, ffn, c.attention_dropout)

        expert_hidden = c.moe_expert_hidden or c.ffn_hidden
        self.encode = nn.ModuleList([layer() for _ in range(c.n_encode)])
        self.loop = nn.ModuleList([
            layer(MoEFFN(d, expert_hidden, c.n_experts, c.moe_top_k, c.moe_shared_expert, c.moe_loop_router))
            for _ in range(c.n_loop_layers)])
        self.decode = nn.ModuleList([layer() for _ in range(c.n_decode)])

        self.streams_in_layers = c.hc_mode != "none" and c.hc_placement == "layer"
        layer_mode = c.hc_mode if self.streams_in_layers else "none"
        hc_kwargs = dict(dynamic=c.hc_dynamic, alpha_init=c.hc_alpha_init, sinkhorn_iters=c.sinkhorn_iters)
        counter = iter(range(10 ** 6))

        def sites(n_layers):
            return nn.ModuleList([
                nn.ModuleList([residual_site(layer_mode, d, c.n_streams, next(counter), **hc_kwargs) for _ in "af"])
                for _ in range(n_layers)])

        self.encode_res, self.loop_res, self.decode_res = sites(c.n_encode), sites(c.n_loop_layers), sites(c.n_decode)
        self.loop_site = (residual_site(c.hc_mode, d, c.n_streams, 0, **hc_kwargs)
                          if c.hc_mode != "none" and c.hc_placement == "loop" else None)
        self.loop_norm = RMSNorm(d) if c.loop_state_norm else None
        self.loop_embedding = nn.Linear(LOOP_FEATURES, d, bias=False) if c.loop_embedding else None
        self.final_norm = RMSNorm(d)
        n_read = self.tokenizer.n_readout + int(c.readout_pool)
        self.content_pairs = schema.sequence_targets()
        self.content = self.content_interest(c.embedding_dim * len(self.content_pairs))
        self.head = MLP(n_read * d + (self.content.out_dim if self.content else 0), c.head_hidden_units, c.activation, c.head_dropout, batch_norm=False, output_dim=1,
                        apg=self.apg)
        self.loop_calls = 0  # passes of the loop block since construction (for cost tests and profiling)

    def reset_parameters(self):
        super().reset_parameters()  # Xavier-normal Linears, zero biases, embeddings N(0, 1e-4)
        reset_own_parameters(self)  # RMSNorm gains, HC coefficients, experts, position/type embeddings

    # -- depths ------------------------------------------------------------------------------------------
    def trained_depths(self) -> int:
        return self.config.train_loops

    def inference_depth(self) -> int:
        return self.config.infer_loops

    def training_depth(self) -> int:
        """Passes of the next training forward: train_loops, or a random 1..train_loops (`loop_sampling`)."""
        c = self.config
        if c.loop_sampling == "random" and c.train_loops > 1:
            return int(torch.randint(1, c.train_loops + 1, ()))
        return c.train_loops

    def depth_temperatures(self, depths: list[int]) -> torch.Tensor:
        c = self.config
        return torch.tensor([c.depth_temperature ** max(c.train_loops - t, 0) for t in depths])

    def depth_weights(self, n: int) -> torch.Tensor:
        """Loss weights of the n supervised depths (sum 1)."""
        kind = self.config.supervision
        if kind == "final" or n == 1:
            w = torch.zeros(n)
            w[-1] = 1.0
            return w
        w = torch.ones(n) if kind == "uniform" else torch.arange(1, n + 1, dtype=torch.float32)
        return w / w.sum()

    # -- blocks ------------------------------------------------------------------------------------------
    def _layer(self, layer: TransformerLayer, sites, x, grid: PackedTokens, readout_only: bool = False,
               loop_index: int | None = None):
        """One layer on the packed state x (R, [n,] d) -> (new state, the FFN's aux loss or None);
        `readout_only`: the layer computes the read-out tokens only."""
        attn_site, ffn_site = sites
        h, mix = attn_site.read(x)
        y = layer.dropout(grid.attend(layer.attn, layer.norm_attn(h), readout_only))
        x = attn_site.write(x, y, mix, grid.readout_index if readout_only else None)
        h, mix = ffn_site.read(x)
        y, aux = layer.ffn_branch(h, **({} if loop_index is None else {"loop_index": loop_index}))
        return ffn_site.write(x, y, mix), aux

    def _loop_block(self, h, grid: PackedTokens, t: int, cond):
        """The loop block's layers on the state h at pass t -> (their output, their summed aux loss or None).
        `cond` (loop embedding, input injection): the layers see h + cond, and it is taken out of their output,
        so the state carries the layers' updates alone."""
        x = h if cond is None else h + cond
        aux = []
        for layer, sites in zip(self.loop, self.loop_res):
            x, a = self._layer(layer, sites, x, grid, loop_index=t)
            if a is not None:
                aux.append(a)
        return x if cond is None else x - cond, (sum(aux) if aux else None)

    def _loop_condition(self, t: int, injected: torch.Tensor | None, like: torch.Tensor):
        """What the block sees beside the state at pass t (loop embedding, input injection), or None."""
        cond = None
        if self.loop_embedding is not None:
            cond = self.loop_embedding(loop_encoding(t, LOOP_FEATURES, like.device, like.dtype))
        if injected is not None:
            cond = injected if cond is None else injected + cond
        return cond

    def _loop_pass(self, x, grid: PackedTokens, t: int, injected=None, trace: dict | None = None):
        """One pass of the loop block over the state x -> (new state, aux loss or None)."""
        self.loop_calls += 1
        cond = self._loop_condition(t, injected, x)
        if self.loop_site is not None:  # Hyperloop: streams around the whole block; the branch is its update
            h, mix = self.loop_site.read(x)
            out, aux = self._loop_block(h, grid, t, cond)
            update = out - h
            new = self.loop_site.write(x, update, mix)
        else:
            new, aux = self._loop_block(x, grid, t, cond)
            update, mix = new - x, None
        if trace is not None:
            trace_pass(trace, x, new, update, mix)
        if self.loop_norm is not None:
            new = self.loop_norm(new)
        return new, aux

    def _readout(self, x, grid: PackedTokens, side: torch.Tensor | None) -> torch.Tensor:
        """Decode layers, read-out tokens (and pooled tokens, and the content interest `side`), head: the logit
        of one depth."""
        c = self.config
        if self.loop_site is not None:  # streams only around the loop: back to one stream for the decoder
            x = collapse_streams(x, self.config.hc_mode) / c.n_streams
        read_rows = False
        for i, (layer, sites) in enumerate(zip(self.decode, self.decode_res)):
            read_rows = i == len(self.decode) - 1 and not c.readout_pool
            x, _ = self._layer(layer, sites, x, grid, readout_only=read_rows)
        if self.streams_in_layers:
            x = collapse_streams(x, c.hc_mode)
        x = self.final_norm(x)
        read = x if read_rows else x.index_select(0, grid.readout_index)
        parts = [read.reshape(grid.rows, -1)]
        if c.readout_pool:
            parts.append(grid.pool(x))
        if side is not None:
            parts.append(side)
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)

    def _encode(self, batch):
        """Tokens, their layout and the encode layers -> (the loop's initial state, the layout, the injected
        input or None, the content interest (B, k) or None: per row, it joins every depth's read-out)."""
        c = self.config
        emb = self.embedding(batch)
        side = None
        if self.content is not None:
            side = self.content(batch, torch.cat([emb[s] for _, s in self.content_pairs], dim=-1))
        tok = self.tokenizer(batch, emb)
        grid = PackedTokens(tok.layout, tok.n_fixed, tok.n_readout, c.attention_mask, c.attention_groups)
        x = tok.x
        if self.streams_in_layers:
            x = expand_streams(x, c.hc_mode, c.n_streams)
        for layer, sites in zip(self.encode, self.encode_res):
            x, _ = self._layer(layer, sites, x, grid)
        injected = x if c.input_injection else None
        if self.loop_site is not None:
            x = expand_streams(x, c.hc_mode, c.n_streams)
        return x, grid, injected, side

    def _temperature(self, logits: torch.Tensor, depth: int) -> torch.Tensor:
        return logits / self.depth_temperatures([depth]).to(logits) if self.config.depth_temperature != 1.0 else logits

    def exit_state(self, x, grid: PackedTokens) -> torch.Tensor:
        """(B, n_readout * d): the loop state at the read-out tokens, streams summed, RMS-normalised; what an
        exit head (models/adaptive_depth.py) decides from, without running the decoder."""
        read = x.index_select(0, grid.readout_index)
        if read.dim() == 3:  # streams
            read = read.sum(-2)
        return rms_norm(read, eps=1e-6).reshape(grid.rows, -1)

    def passes(self, batch, max_depth: int):
        """Inference, every pass read out: yields (depth, logits (B,), exit state (B, n_readout * d))."""
        x, grid, injected, side = self._encode(batch)
        for t in range(1, max_depth + 1):
            x, _ = self._loop_pass(x, grid, t, injected)
            yield t, self._temperature(self._readout(x, grid, side), t), self.exit_state(x, grid)

    def forward_adaptive(self, batch, decide, max_depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference at a per-row depth: after every pass t, `decide(t, exit_state, previous exit_state)` -> (B_t,)
        bool says which of the remaining rows stop; those are read out at depth t and leave the batch, so later
        passes run on the others alone (every row stops at `max_depth`). Returns logits (B,) and depths (B,)."""
        x, grid, injected, side = self._encode(batch)
        b = grid.rows
        logits = torch.empty(b, device=x.device)
        depths = torch.empty(b, dtype=torch.long, device=x.device)
        rows = torch.arange(b, device=x.device)  # the batch rows still looping
        previous = None
        for t in range(1, max_depth + 1):
            x, _ = self._loop_pass(x, grid, t, injected)
            state = self.exit_state(x, grid)
            stop = (decide(t, state, previous) if t < max_depth
                    else torch.ones(rows.shape[0], dtype=torch.bool, device=x.device))
            if bool(stop.all()):  # the rest stop here: read them out in the layout they have
                logits[rows] = self._temperature(self._readout(x, grid, side), t)
                depths[rows] = t
                break
            if bool(stop.any()):
                done = stop.nonzero().squeeze(-1)
                sub, tokens = grid.select(done)
                logits[rows[done]] = self._temperature(
                    self._readout(x.index_select(0, tokens), sub, None if side is None else side[done]), t)
                depths[rows[done]] = t
            keep = (~stop).nonzero().squeeze(-1)
            grid, tokens = grid.select(keep)
            x = x.index_select(0, tokens)
            injected = None if injected is None else injected.index_select(0, tokens)
            side = None if side is None else side[keep]
            rows, previous = rows[keep], state[keep]
        return logits, depths

    # -- forward -----------------------------------------------------------------------------------------
    def skips_parameters(self) -> bool:
        return self.config.n_experts > 1

    def forward(self, batch, depths: list[int] | None = None, diagnostics: bool = False):
        """Training: the supervised depths (1..train_loops, or a random 1..n with `loop_sampling`; only the last
        with final-only supervision). Inference: `depths` (default [infer_loops]) runs max(depths) passes of the
        loop block and reads out exactly those depths, so its cost grows with the deepest one alone; `logits` is
        the last of them. `diagnostics`: also return per-pass sums of the loop state and its updates and the
        hyper-connection coefficients (`loop_trace`, see `trace_pass`)."""
        c = self.config
        if self.training:
            if depths is not None:
                raise UserError("forward(depths=...) is for inference; training runs the supervised depths")
            n = self.training_depth()
            read = range(1, n + 1) if c.supervision != "final" else [n]
        else:
            read = sorted(set(depths)) if depths is not None else [c.infer_loops]
            if not read or read[0] < 1:
                raise UserError(f"depths must be >= 1, got {depths}")
            n = read[-1]
        x, grid, injected, side = self._encode(batch)
        trace = {} if diagnostics else None
        logits, aux = [], []
        for t in range(1, n + 1):
            x, a = self._loop_pass(x, grid, t, injected, trace)
            if a is not None:
                aux.append(a)
            if t in read:
                logits.append(self._readout(x, grid, side))
        by_depth = torch.stack(logits)
        if c.depth_temperature != 1.0:
            by_depth = by_depth / self.depth_temperatures(list(read)).to(by_depth).unsqueeze(-1)
        out = {"logits": by_depth[-1], "logits_by_depth": by_depth}
        if aux and c.n_experts > 1 and c.moe_aux_weight > 0:  # mean over passes and loop layers
            out["aux_loss"] = c.moe_aux_weight * torch.stack(aux).mean() / len(self.loop)
        if trace is not None:
            out["loop_trace"] = {k: torch.stack(v) for k, v in trace.items()}
        return out

    def loss(self, outputs, labels):
        """Process supervision: the weighted per-depth BCE (weights from `supervision`), plus the MoE aux loss
        and the depth-wise self-distillation term."""
        c = self.config
        by_depth = outputs["logits_by_depth"]
        per_depth = F.binary_cross_entropy_with_logits(by_depth, labels.expand_as(by_depth), reduction="none").mean(1)
        loss = (self.depth_weights(by_depth.shape[0]).to(per_depth) * per_depth).sum()
        parts = {"bce": per_depth[-1].detach()}
        parts.update({f"bce_{i + 1}": v for i, v in enumerate(per_depth.detach())})
        if c.distill_weight > 0 and by_depth.shape[0] > 1:
            tau = c.distill_temperature
            teacher = torch.sigmoid(by_depth[-1].detach() / tau).expand_as(by_depth[:-1])
            distill = F.binary_cross_entropy_with_logits(by_depth[:-1] / tau, teacher) * tau ** 2
            loss = loss + c.distill_weight * distill
            parts["distill"] = distill.detach()
        return self.add_auxiliary(loss, parts, outputs)


def trace_pass(trace: dict, before: torch.Tensor, after: torch.Tensor, proposal: torch.Tensor, coefficients) -> None:
    """Accumulate one loop pass's diagnostics (sums over the packed rows, so batches add up): `state_sq`
    ||x_(t-1)||^2, `update_sq` ||x_t - x_(t-1)||^2 (what the pass wrote into the state), `proposal_sq`
    ||u_t||^2 (the block's own update, before the hyper-connection mixing), `rows`; with hyper-connections
    also the summed H_pre (n), H_post (n) and H_res (n, n) of every row."""
    entries = {"state_sq": before.float().square().sum(), "update_sq": (after - before).float().square().sum(),
               "proposal_sq": proposal.float().square().sum(),
               "rows": torch.tensor(float(before.shape[0]), device=before.device)}
    if coefficients is not None:
        pre, post, res = coefficients
        entries.update(hc_pre=pre.float().sum(0), hc_post=post.float().sum(0), hc_res=res.float().sum(0))
    for key, value in entries.items():
        trace.setdefault(key, []).append(value.detach())
