"""Transformer blocks: prunable attention and what prunekit knows about common vision transformers.

Each attention kind is registered once, as a tracer module op (how its heads couple:
:mod:`prunekit.graph.attention`) plus a surgery handler (its attributes after slicing):

* ``torch.nn.MultiheadAttention``: its forward ties the width of the heads to ``embed_dim``, so
  after surgery the module becomes a :class:`PrunableMultiheadAttention` — the same module (same
  parameters, state-dict keys and call interface) whose forward takes the head count and head
  dimension as they are. Replaying the plan (``prunekit.load``) makes the same change, so no
  separate conversion step is recorded.
* torchvision's ``ShiftedWindowAttention`` (Swin) and ``ShiftedWindowAttentionV2`` (Swin V2):
  likewise become :class:`PrunableShiftedWindowAttention` / ``...V2``, whose head dimension no
  longer derives from the input width; the relative position bias (V2: its MLP's last rows and
  the logit scales) is pruned per head.
* timm's ``Attention`` and ``AttentionRope`` (also grouped-query, ``num_kv_heads``): the head
  counts and widths (``num_heads``, ``num_kv_heads``, ``attn_dim``, ``kv_dim``) are updated.

Heads are pruned whole; the softmax scale is the original constant. Size attributes
(:func:`prunekit.graph.module_ops.track_sizes`): torchvision's ``VisionTransformer.hidden_dim``
and timm's MetaFormer ``Scale.shape`` follow the pruned residual stream.

Example:
    >>> model = torchvision.models.vit_b_16()
    >>> prune(model, torch.randn(1, 3, 224, 224), PruneConfig(ratio=0.5))
    >>> type(model.encoder.layers[0].self_attention).__name__
    'PrunableMultiheadAttention'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2
from torchvision.models.vision_transformer import VisionTransformer

from prunekit.graph.attention import (
    Heads,
    couple_heads,
    freeze_heads,
    linear_rows,
    named_or_none,
    opaque_fallback,
    out_projection,
    tokens_per_sample,
)
from prunekit.graph.module_ops import SizeAttr, track_sizes
from prunekit.graph.ops import _arg
from prunekit.graph.tracer import Tracer, register_module_op
from prunekit.surgery import register_module

# --------------------------------------------------------------------------- MultiheadAttention


class PrunableMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose heads may be fewer and narrower than ``embed_dim`` says.

    Same parameters, state-dict keys, call signature and results as ``nn.MultiheadAttention``
    (masks, ``need_weights``, ``batch_first``, ``kdim``/``vdim``, ``add_bias_kv``,
    ``add_zero_attn``, dropout); the queries are ``num_heads × head_dim`` wide and scaled by
    ``scale`` (the original ``head_dim ** -0.5``). Made by surgery from a pruned
    ``nn.MultiheadAttention`` (see the module docstring).

    Attributes:
        head_dim: width of each head.
        scale: the softmax scale.
    """

    scale: float

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if is_causal and attn_mask is None:
            raise RuntimeError("need attn_mask if specifying the is_causal hint")
        causal = is_causal and key_padding_mask is None and not need_weights
        q, k, v = self._project(query, key, value)
        mask = None if causal else _mha_mask(self, attn_mask, key_padding_mask, query, k)
        k, v, mask = self._extend_keys(k, v, mask)
        out, weights = self._attend(q, k, v, mask, causal, need_weights)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        out = out.view(query.shape[0], query.shape[1], -1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            return out.squeeze(1), None if weights is None else weights.squeeze(0)
        return (out.transpose(0, 1) if self.batch_first else out), weights

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values, ``(length, batch, heads * head_dim)``."""
        width = self.num_heads * self.head_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else b.split(width)
        if self._qkv_same_embed_dim:
            wq, wk, wv = self.in_proj_weight.split(width)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def _extend_keys(
        self, k: Tensor, v: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``add_bias_kv`` and ``add_zero_attn``: one more key/value position each."""
        extra = []
        if self.bias_k is not None and self.bias_v is not None:
            batch = k.shape[1]
            k = torch.cat([k, self.bias_k.repeat(1, batch, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, batch, 1)])
            extra.append(1)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros((1, *k.shape[1:]))])
            v = torch.cat([v, v.new_zeros((1, *v.shape[1:]))])
            extra.append(1)
        if mask is not None and extra:
            mask = F.pad(mask, (0, len(extra)))
        return k, v, mask

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Heads' outputs ``(length * batch, heads * head_dim)`` and, if asked, the weights."""
        length, batch, heads = q.shape[0], q.shape[1], self.num_heads
        q, k, v = (t.reshape(t.shape[0], batch, heads, -1).permute(1, 2, 0, 3) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        if weights:
            scores = (q * self.scale) @ k.transpose(-2, -1)
            w = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            w = F.dropout(w, p=p) if p > 0 else w  # returned after dropout, as nn.MHA does
            out = w @ v
        else:
            w = None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal, scale=self.scale
            )
        return out.permute(2, 0, 1, 3).reshape(length * batch, -1), w


def _mha_mask(
    mod: nn.MultiheadAttention,
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    query: Tensor,
    k: Tensor,
) -> Tensor | None:
    """One additive float mask ``(batch, heads, length, keys)`` (broadcastable), or None."""

    def additive(m: Tensor) -> Tensor:
        if m.dtype == torch.bool:
            return torch.zeros(m.shape, dtype=query.dtype, device=m.device).masked_fill(
                m, float("-inf")
            )
        return m.to(query.dtype)

    batch, heads = query.shape[1], mod.num_heads
    out = None
    if attn_mask is not None:
        m = additive(attn_mask)
        out = m.view(batch, heads, *m.shape[1:]) if m.dim() == 3 else m
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(batch, 1, 1, k.shape[0])
        out = pad if out is None else out + pad
    return out


def _mha_exit(tr: Tracer, mod: Any, args: Any, kwargs: Any, output: Any) -> None:
    if type(mod) not in (nn.MultiheadAttention, PrunableMultiheadAttention):
        return opaque_fallback(tr, args, kwargs, output, f"{type(mod).__name__}: unknown forward")
    ins = [_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value"))]
    tensors = [mod.in_proj_weight, mod.q_proj_weight, mod.k_proj_weight, mod.v_proj_weight,
               mod.in_proj_bias, mod.bias_k, mod.bias_v, mod.out_proj.weight, mod.out_proj.bias]  # fmt: skip
    if not named_or_none(tr, tensors):
        return opaque_fallback(tr, args, kwargs, output, "MultiheadAttention: weights computed")
    heads, dim = mod.num_heads, mod.head_dim
    width = heads * dim
    tokens = tokens_per_sample(ins[0], 0 if mod.batch_first else 1)
    if mod._qkv_same_embed_dim:
        rows = linear_rows(tr, ins, mod.in_proj_weight, mod.in_proj_bias, tokens)
        q, k, v = rows.reshape(3, heads, dim)
    else:
        weights = (mod.q_proj_weight, mod.k_proj_weight, mod.v_proj_weight)
        q, k, v = (
            linear_rows(tr, [x], w, None, tokens).reshape(heads, dim) for x, w in zip(ins, weights)
        )
        b = mod.in_proj_bias
        if b is not None:  # one packed bias for three separate weights
            tr.merge(tr.slot(tr.name_of(b) or "", 0, 3 * width), np.concatenate([q, k, v], None))
    cols, rows = out_projection(tr, mod.out_proj.weight, mod.out_proj.bias, output[0], tokens)
    found = Heads(q, k, v, cols.reshape(heads, dim))
    for t, vals in ((mod.bias_k, found.k), (mod.bias_v, found.v)):
        if t is not None:
            tr.merge(tr.slot(tr.name_of(t) or "", 2, width), vals.reshape(-1))
    couple_heads(tr, found)
    attn_mask = _arg(args, kwargs, 5, "attn_mask")
    if _arg(args, kwargs, 4, "need_weights", True):
        freeze_heads(tr, found, "MultiheadAttention returns weights over all heads "
                     "(call it with need_weights=False to prune heads)")  # fmt: skip
    elif isinstance(attn_mask, Tensor) and attn_mask.dim() == 3:
        freeze_heads(tr, found, "attn_mask is given per head")
    return None


@register_module(nn.MultiheadAttention)
def _mha_fix(mod: Any, before: dict[str, Any]) -> None:
    if type(mod) not in (nn.MultiheadAttention, PrunableMultiheadAttention):
        return
    dim = before["head_dim"]
    if mod._qkv_same_embed_dim:
        mod.embed_dim = mod.kdim = mod.vdim = mod.in_proj_weight.shape[1]
        mod.num_heads = mod.in_proj_weight.shape[0] // 3 // dim
    else:
        mod.embed_dim = mod.q_proj_weight.shape[1]
        mod.kdim, mod.vdim = mod.k_proj_weight.shape[1], mod.v_proj_weight.shape[1]
        mod.num_heads = mod.q_proj_weight.shape[0] // dim
    mod.scale = before.get("scale", dim**-0.5)
    mod.__class__ = PrunableMultiheadAttention


# --------------------------------------------------------------------------- Swin


def _shift_mask(x: Tensor, size: tuple[int, int], window: list[int], shift: list[int]) -> Tensor:
    """Swin's mask against attending across the seams of a cyclic shift: ``(windows, n, n)``."""
    mask = x.new_zeros(size)
    h_parts = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_parts = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    for i, (h0, h1) in enumerate(h_parts):
        for j, (w0, w1) in enumerate(w_parts):
            mask[h0:h1, w0:w1] = 3 * i + j
    mask = mask.view(size[0] // window[0], window[0], size[1] // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    diff = mask.unsqueeze(1) - mask.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _windows(
    x: Tensor, window: list[int], shift: list[int]
) -> tuple[Tensor, list[int], tuple[int, int]]:
    """Pad, shift and cut ``(B, H, W, C)`` into windows ``(B·n, wh·ww, C)``; the shift used and
    the padded size."""
    pad_r = (window[1] - x.shape[2] % window[1]) % window[1]
    pad_b = (window[0] - x.shape[1] % window[0]) % window[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    b, ph, pw, c = x.shape
    shift = [0 if window[i] >= (ph, pw)[i] else shift[i] for i in range(2)]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    x = x.view(b, ph // window[0], window[0], pw // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c), shift, (ph, pw)


def window_attention(mod: Any, x: Tensor, bias: Tensor, logit_scale: Tensor | None) -> Tensor:
    """Swin's shifted-window attention with the head width as an attribute (``head_dim``).

    The computation of torchvision's ``shifted_window_attention``, except that the head width
    and the scale (V1) are the module's ``head_dim`` and ``scale`` instead of derived from the
    input width, so heads and the residual stream prune independently.
    """
    b, h, w, _ = x.shape
    window = list(mod.window_size)
    win, shift, (ph, pw) = _windows(x, window, list(mod.shift_size))
    heads, width = mod.num_heads, mod.num_heads * mod.head_dim
    qkv_bias = mod.qkv.bias
    if logit_scale is not None and qkv_bias is not None:  # V2: keys have no bias
        qkv_bias = torch.cat([qkv_bias[:width], torch.zeros_like(qkv_bias[width:-width]),
                              qkv_bias[-width:]])  # fmt: skip
    qkv = F.linear(win, mod.qkv.weight, qkv_bias)
    q, k, v = qkv.reshape(win.shape[0], win.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * mod.scale).matmul(k.transpose(-2, -1))
    attn = attn + bias
    if sum(shift) > 0:
        mask = _shift_mask(x, (ph, pw), window, shift)
        n = mask.shape[0]
        attn = attn.view(-1, n, heads, win.shape[1], win.shape[1]) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, win.shape[1], win.shape[1])
    attn = F.dropout(F.softmax(attn, dim=-1), p=mod.attention_dropout, training=mod.training)
    out = attn.matmul(v).transpose(1, 2).reshape(win.shape[0], win.shape[1], width)
    out = F.dropout(
        F.linear(out, mod.proj.weight, mod.proj.bias), p=mod.dropout, training=mod.training
    )
    c = out.shape[-1]
    out = out.view(b, ph // window[0], pw // window[1], window[0], window[1], c)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
    if sum(shift) > 0:
        out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
    return out[:, :h, :w, :].contiguous()


class PrunableShiftedWindowAttention(ShiftedWindowAttention):
    """torchvision's ``ShiftedWindowAttention`` with its head width as an attribute.

    Attributes:
        head_dim: width of each head.
        scale: the softmax scale (the original ``head_dim ** -0.5``).
    """

    head_dim: int
    scale: float

    def forward(self, x: Tensor) -> Tensor:
        return window_attention(self, x, self.get_relative_position_bias(), None)


class PrunableShiftedWindowAttentionV2(ShiftedWindowAttentionV2):
    """torchvision's ``ShiftedWindowAttentionV2`` with its head width as an attribute."""

    head_dim: int

    def forward(self, x: Tensor) -> Tensor:
        return window_attention(self, x, self.get_relative_position_bias(), self.logit_scale)


_PRUNABLE_SWIN: dict[type[nn.Module], type[nn.Module]] = {
    ShiftedWindowAttention: PrunableShiftedWindowAttention,
    ShiftedWindowAttentionV2: PrunableShiftedWindowAttentionV2,
    PrunableShiftedWindowAttention: PrunableShiftedWindowAttention,
    PrunableShiftedWindowAttentionV2: PrunableShiftedWindowAttentionV2,
}


def _swin_exit(tr: Tracer, mod: Any, args: Any, kwargs: Any, output: Any) -> None:
    v2 = isinstance(mod, ShiftedWindowAttentionV2)
    per_head = (
        [mod.logit_scale, mod.cpb_mlp[-1].weight] if v2 else [mod.relative_position_bias_table]
    )
    tensors = [mod.qkv.weight, mod.qkv.bias, mod.proj.weight, mod.proj.bias, *per_head]
    if type(mod) not in _PRUNABLE_SWIN or not named_or_none(tr, tensors):
        return opaque_fallback(tr, args, kwargs, output, f"{type(mod).__name__}: unknown forward")
    x, heads = args[0], mod.num_heads
    tokens = tokens_per_sample(x)
    q, k, v = linear_rows(tr, [x], mod.qkv.weight, mod.qkv.bias, tokens).reshape(3, heads, -1)
    cols, _ = out_projection(tr, mod.proj.weight, mod.proj.bias, output, tokens)
    found = Heads(q, k, v, cols.reshape(heads, -1))
    for t, dim in zip(per_head, (0, 0) if v2 else (1,)):
        found.per_head.append(tr.slot(tr.name_of(t) or "", dim, heads).reshape(heads, 1))
    last = mod.cpb_mlp[-1] if v2 else None
    if last is not None and last.bias is not None:
        found.per_head.append(tr.slot(tr.name_of(last.bias) or "", 0, heads).reshape(heads, 1))
    couple_heads(tr, found)
    return None


@register_module(ShiftedWindowAttention)
def _swin_fix(mod: Any, before: dict[str, Any]) -> None:
    if type(mod) not in _PRUNABLE_SWIN:
        return
    v2 = isinstance(mod, ShiftedWindowAttentionV2)
    heads = mod.logit_scale.shape[0] if v2 else mod.relative_position_bias_table.shape[1]
    dim = before.get("head_dim") or mod.qkv.weight.shape[0] // 3 // heads
    mod.num_heads, mod.head_dim = heads, dim
    mod.scale = before.get("scale", dim**-0.5)
    mod.__class__ = _PRUNABLE_SWIN[type(mod)]


# --------------------------------------------------------------------------- timm

_TIMM = ("timm.layers.attention.Attention", "timm.layers.attention.AttentionRope")


def _qualname(mod: nn.Module) -> str:
    return f"{type(mod).__module__}.{type(mod).__qualname__}"


def _timm_exit(tr: Tracer, mod: Any, args: Any, kwargs: Any, output: Any) -> None:
    qkv = getattr(mod, "qkv", None)
    projs = [qkv] if qkv is not None else [mod.q_proj, mod.k_proj, mod.v_proj]
    gate, norm = getattr(mod, "gate", None), getattr(mod, "norm", None)
    layers = [*projs, mod.proj, *([gate] if gate is not None else [])]
    tensors = [t for m in layers for t in (m.weight, m.bias)]
    # a norm over the heads' outputs normalises the kept heads (prunekit.graph.norms)
    over_heads = [] if norm is None or isinstance(norm, nn.Identity) else [norm.weight]
    over_heads += [getattr(norm, "bias", None)] if over_heads else []
    norm_ok = norm is None or isinstance(norm, (nn.Identity, nn.LayerNorm, nn.RMSNorm))
    if over_heads and over_heads[0] is None:
        norm_ok = False
    if _qualname(mod) not in _TIMM or not named_or_none(tr, tensors + over_heads) or not norm_ok:
        return opaque_fallback(tr, args, kwargs, output, f"{_qualname(mod)}: unknown layout")
    x, heads, dim = args[0], mod.num_heads, mod.head_dim
    tokens = tokens_per_sample(x)
    if qkv is not None:
        q, k, v = linear_rows(tr, [x], qkv.weight, qkv.bias, tokens).reshape(3, heads, dim)
    else:
        q, k, v = (linear_rows(tr, [x], p.weight, p.bias, tokens).reshape(-1, dim) for p in projs)
    cols, _ = out_projection(tr, mod.proj.weight, mod.proj.bias, output, tokens)
    found = Heads(q, k, v, cols.reshape(heads, dim))
    if gate is not None:
        found.per_head.append(
            linear_rows(tr, [x], gate.weight, gate.bias, tokens).reshape(heads, dim)
        )
    for t in over_heads:
        if t is not None:
            found.per_head.append(tr.slot(tr.name_of(t) or "", 0, heads * dim).reshape(heads, dim))
    couple_heads(tr, found)
    mask = _arg(args, kwargs, 2 if "Rope" in _qualname(mod) else 1, "attn_mask")
    if isinstance(mask, Tensor) and mask.dim() == 4 and mask.shape[1] > 1:
        freeze_heads(tr, found, "attn_mask is given per head")
    return None


def _timm_fix(mod: Any, before: dict[str, Any]) -> None:
    dim = before["head_dim"]
    mod.num_heads = mod.proj.weight.shape[1] // dim
    mod.attn_dim = mod.num_heads * dim
    if hasattr(mod, "num_kv_heads"):
        kv = mod.k_proj.weight.shape[0] // dim if mod.qkv is None else mod.num_heads
        mod.num_kv_heads, mod.kv_dim = kv, kv * dim
        mod.num_kv_groups = mod.num_heads // kv


# --------------------------------------------------------------------------- registrations

register_module_op(nn.MultiheadAttention, exit=_mha_exit, opaque=True)
register_module_op(ShiftedWindowAttention, exit=_swin_exit, opaque=True)
for _name in _TIMM:
    register_module_op(_name, exit=_timm_exit, opaque=True)
    register_module(_name)(_timm_fix)
track_sizes(VisionTransformer, SizeAttr("hidden_dim", "conv_proj.weight", 0))
track_sizes("timm.models.metaformer.Scale", SizeAttr("shape", "scale", 0, index=0))
