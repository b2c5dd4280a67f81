"""A differentiable Think-at-Hard forward in PyTorch, written from
the method as docs/TAH_SEMANTICS.md states it (no reference code).

Pieces:
  * `Base`: a Hugging Face-layout decoder (llama, qwen2, qwen3) with our own
    layers; every linear inside the decoder layers can carry a LoRA adapter that
    is switched on per call (`lora=True` at depth 2 only).
  * `MLPIterDecider`: the iteration decider, parameter names as the reference's
    state_dict (notes §1, §6).
  * `tah_forward`: depth 1 → decide (or an oracle mask) → soft input → depth 2
    over the hard tokens only, with duo-causal attention through an explicit mask
    over [depth-1 keys | depth-2 keys] → logits1 (+ logits2 at hard tokens).
  * loading and saving in the reference checkpoint layout.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

LINEARS = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
           ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"),
           ("mlp", "down_proj")]


# ----------------------------------------------------------------------------- config

class Config:
    def __init__(self, d):
        self.raw = d
        self.model_type = d["model_type"]
        if self.model_type not in ("llama", "qwen2", "qwen3"):
            raise ValueError(f"model_type {self.model_type} not supported")
        self.hidden = d["hidden_size"]
        self.inter = d["intermediate_size"]
        self.layers = d["num_hidden_layers"]
        self.nh = d["num_attention_heads"]
        self.nkv = d.get("num_key_value_heads") or self.nh
        self.hd = d.get("head_dim") or self.hidden // self.nh
        self.eps = d["rms_norm_eps"]
        self.theta = d.get("rope_theta") or (10000.0 if self.model_type == "llama" else 1e6)
        self.vocab = d["vocab_size"]
        self.tied = bool(d.get("tie_word_embeddings", False))
        self.qk_norm = self.model_type == "qwen3"
        self.qkv_bias = self.model_type == "qwen2" or bool(d.get("attention_bias", False))

    @staticmethod
    def load(path):
        with open(os.path.join(path, "config.json")) as f:
            return Config(json.load(f))


# ----------------------------------------------------------------------------- base model

class LoRALinear(nn.Module):
    """y = W x (+ b) (+ s1 · B1 (A1 x)) (+ (alpha/r) · B (A x) when the adapter is on).

    Two adapters: the depth-2 LoRA (`lora_A/B`, the reference layout's `lora/`,
    on only when `lora=True`, i.e. at depth >= 2) and an optional depth-1 LoRA
    (`lora_d1_A/B`): a trainable low-rank change of the base weight itself, so it
    acts at every depth; it is merged into W when the checkpoint is written
    (`Base.merge_d1`), after which depth 1 is an ordinary model. `d1_on = False`
    switches it off (the frozen initial model, used for the static oracle)."""

    def __init__(self, fin, fout, bias=False):
        super().__init__()
        self.fin, self.fout = fin, fout
        self.weight = nn.Parameter(torch.zeros(fout, fin))
        self.bias = nn.Parameter(torch.zeros(fout)) if bias else None
        self.lora_A = None
        self.lora_B = None
        self.scaling = 0.0
        self.lora_d1_A = None
        self.lora_d1_B = None
        self.scaling_d1 = 0.0
        self.d1_on = True

    def add_lora_d1(self, r, alpha):
        self.lora_d1_A = nn.Parameter(torch.empty(r, self.fin))
        nn.init.kaiming_uniform_(self.lora_d1_A, a=math.sqrt(5))
        self.lora_d1_B = nn.Parameter(torch.zeros(self.fout, r))
        self.scaling_d1 = alpha / r

    def add_lora(self, r, alpha):
        self.lora_A = nn.Parameter(torch.empty(r, self.fin))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # PEFT's default init
        self.lora_B = nn.Parameter(torch.zeros(self.fout, r))
        self.scaling = alpha / r

    def forward(self, x, lora=False):
        y = F.linear(x, self.weight, self.bias)
        if self.d1_on and self.lora_d1_A is not None:
            y = y + F.linear(F.linear(x, self.lora_d1_A), self.lora_d1_B) * self.scaling_d1
        if lora and self.lora_A is not None:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = LoRALinear(c.hidden, c.nh * c.hd, c.qkv_bias)
        self.k_proj = LoRALinear(c.hidden, c.nkv * c.hd, c.qkv_bias)
        self.v_proj = LoRALinear(c.hidden, c.nkv * c.hd, c.qkv_bias)
        self.o_proj = LoRALinear(c.nh * c.hd, c.hidden)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.hd, c.eps)
            self.k_norm = RMSNorm(c.hd, c.eps)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = LoRALinear(c.hidden, c.inter)
        self.up_proj = LoRALinear(c.hidden, c.inter)
        self.down_proj = LoRALinear(c.inter, c.hidden)

    def forward(self, x, lora):
        return self.down_proj(F.silu(self.gate_proj(x, lora)) * self.up_proj(x, lora), lora)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden, c.eps)
        self.mlp = MLP(c)


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c.layers)])
        self.norm = RMSNorm(c.hidden, c.eps)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Base(nn.Module):
    """Parameter names are Hugging Face's (`model.layers.0.self_attn.q_proj.weight`)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        if not c.tied:
            self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)
        inv = 1.0 / (c.theta ** (torch.arange(0, c.hd, 2, dtype=torch.int64).float() / c.hd))
        self.register_buffer("inv_freq", inv, persistent=False)

    # -- weights
    def lm_weight(self):
        return self.model.embed_tokens.weight if self.c.tied else self.lm_head.weight

    def linears(self):
        for l, layer in enumerate(self.model.layers):
            for part, name in LINEARS:
                yield l, part, name, getattr(getattr(layer, part), name)

    def add_lora(self, r, alpha):
        for *_, lin in self.linears():
            lin.add_lora(r, alpha)
        self.lora_r, self.lora_alpha = r, alpha

    def lora_parameters(self):
        for *_, lin in self.linears():
            if lin.lora_A is not None:
                yield lin.lora_A
                yield lin.lora_B

    def add_lora_d1(self, r, alpha):
        for *_, lin in self.linears():
            lin.add_lora_d1(r, alpha)
        self.lora_d1_r, self.lora_d1_alpha = r, alpha

    def lora_d1_parameters(self):
        for *_, lin in self.linears():
            if lin.lora_d1_A is not None:
                yield lin.lora_d1_A
                yield lin.lora_d1_B

    def set_d1(self, on):
        """Switches the depth-1 LoRA on/off (off = the initial base weights)."""
        for *_, lin in self.linears():
            lin.d1_on = on

    @torch.no_grad()
    def merge_d1(self):
        """W += s1 · B1 A1 for every linear, then drops the depth-1 adapter.
        The product and sum are taken in float64 and rounded once to W's dtype,
        as `merge_lora_d1` (numpy) does at build time, so both give the same bits."""
        for *_, lin in self.linears():
            if lin.lora_d1_A is None:
                continue
            w = lin.weight.double() + lin.scaling_d1 * (lin.lora_d1_B.double() @ lin.lora_d1_A.double())
            lin.weight.copy_(w.to(lin.weight.dtype))
            lin.lora_d1_A = lin.lora_d1_B = None

    # -- forward
    def rope(self, pos):
        freqs = pos.float()[..., None] * self.inv_freq  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None], emb.sin()[:, None]  # (B, 1, T, hd)

    def stack(self, x, pos, mask, lora=False, past=None, want_hidden=False, want_kv=False):
        """Runs every decoder layer.

        x (B, T, H) input embeddings; pos (B, T) positions; mask (B, T, P+T) bool,
        True = may attend, over [past keys (P) | own keys (T)]; past: per layer
        (K, V) of shape (B, nkv, P, hd) after RoPE (and QK-norm).
        Returns logits (B, T, V), hidden states (HF numbering: [0] = x,
        [i] = after layer i, [L] = final-norm output) and per-layer (K, V).
        """
        c = self.c
        B, T, _ = x.shape
        cos, sin = self.rope(pos)
        amask = mask[:, None]  # (B, 1, T, P+T)
        hs = [x] if want_hidden else None
        kvs = [] if want_kv else None
        rep = c.nh // c.nkv
        for l, layer in enumerate(self.model.layers):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_proj(h, lora).view(B, T, c.nh, c.hd)
            k = a.k_proj(h, lora).view(B, T, c.nkv, c.hd)
            v = a.v_proj(h, lora).view(B, T, c.nkv, c.hd)
            if c.qk_norm:
                q = a.q_norm(q)
                k = a.k_norm(k)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if want_kv:
                kvs.append((k, v))
            if past is not None:
                k = torch.cat((past[l][0], k), dim=2)
                v = torch.cat((past[l][1], v), dim=2)
            if rep > 1:
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=amask)
            o = o.transpose(1, 2).reshape(B, T, c.nh * c.hd)
            x = x + a.o_proj(o, lora)
            x = x + layer.mlp(layer.post_attention_layernorm(x), lora)
            if want_hidden and l < c.layers - 1:
                hs.append(x)
        x = self.model.norm(x)
        if want_hidden:
            hs.append(x)
        return F.linear(x, self.lm_weight()), hs, kvs


# ----------------------------------------------------------------------------- decider

class Block(nn.Module):
    def __init__(self, din, dout, expansion, dropout):
        super().__init__()
        self.layer_norm = nn.LayerNorm(din, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(din, din * expansion), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(din * expansion, dout), nn.Dropout(dropout))
        self.dim_change = nn.Linear(din, dout) if din != dout else nn.Identity()

    def forward(self, x):
        return self.dim_change(x) + self.mlp(self.layer_norm(x))


class Backbone(nn.Module):
    def __init__(self, dims, expansion, dropout):
        super().__init__()
        self.input_projection = nn.Linear(dims[0], dims[0])
        bd = list(dims) + [dims[-1]]
        self.blocks = nn.ModuleList([Block(bd[i], bd[i + 1], expansion, dropout)
                                     for i in range(len(dims))])
        self.output_layer = nn.Sequential(nn.LayerNorm(bd[-1], eps=1e-5), nn.Linear(bd[-1], 1))

    def forward(self, x):
        x = self.input_projection(x)
        for b in self.blocks:
            x = b(x)
        return self.output_layer(x).squeeze(-1)


class MLPIterDecider(nn.Module):
    """Continue-probability of a token from its depth-1 hidden states and top-k logits."""

    def __init__(self, topk, hidden_states_size, hidden_states_layer_nums, hidden_dims,
                 expansion_factor=4, dropout_rate=0.0, normalize_input=False, threshold=0.8,
                 dtype=torch.float32, max_iter=3):
        super().__init__()
        self.init_args = dict(topk=topk, hidden_states_size=hidden_states_size,
                              hidden_states_layer_nums=list(hidden_states_layer_nums),
                              hidden_dims=list(hidden_dims), expansion_factor=expansion_factor,
                              dropout_rate=dropout_rate, normalize_input=normalize_input,
                              threshold=threshold, dtype=dtype, max_iter=max_iter)
        self.topk = topk
        self.layer_nums = list(hidden_states_layer_nums)
        self.normalize_input = normalize_input
        self.max_iter = max_iter
        self.threshold = nn.Parameter(torch.tensor(threshold, dtype=dtype), requires_grad=False)
        H, n = hidden_states_size, len(self.layer_nums)
        self.logits_projection = nn.Linear(topk, H)
        self.combined_projection = nn.Linear(n * H + H, hidden_dims[0])
        self.backbone = Backbone(hidden_dims, expansion_factor, dropout_rate)
        if normalize_input:
            self.layer_norm_hidden_states = nn.LayerNorm(n * H, eps=1e-5)

    def features(self, hidden_states, logits):
        """(concatenated hidden states, sorted top-k logit values)."""
        hc = torch.cat([hidden_states[n] for n in self.layer_nums], dim=-1)
        tv = torch.topk(logits, min(self.topk, logits.shape[-1]), dim=-1).values
        return hc, tv

    def logit_from_features(self, hc, tv):
        if self.normalize_input:
            hc = self.layer_norm_hidden_states(hc)
            tv = torch.softmax(tv, dim=-1)
        return self.backbone(self.combined_projection(torch.cat((hc, self.logits_projection(tv)), -1)))

    def forward(self, hidden_states, logits):
        return torch.sigmoid(self.logit_from_features(*self.features(hidden_states, logits)))


# ----------------------------------------------------------------------------- TaH forward

def soft_input(base, logits, k):
    """Σ softmax(top-k logits)_j · E[j] over the k largest logits (no temperature)."""
    v, idx = torch.topk(logits, k, dim=-1)
    w = torch.softmax(v, dim=-1)
    E = base.model.embed_tokens.weight
    return torch.einsum("...k,...kh->...h", w, E[idx])


def tah_forward(base, ids, valid=None, hard=None, decider=None, threshold=None, input_topk=100,
                depth1_grad=False, want_decider_inputs=False):
    """One TaH forward (max_iter 2) over a right-padded batch.

    ids (B, T); valid (B, T) bool (False = padding). `hard` (B, T) bool, or a
    function of the depth-1 logits giving one, forces the depth-2 set (oracle
    policy in training); otherwise the decider decides with
    `prob > threshold` (strict). Returns dict(logits, logits1, hard, prob?, hc?, tv?).
    """
    B, T = ids.shape
    dev = ids.device
    if valid is None:
        valid = torch.ones(B, T, dtype=torch.bool, device=dev)
    pos = torch.arange(T, device=dev).expand(B, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    mask1 = causal[None] & valid[:, None, :]
    x1 = base.model.embed_tokens(ids)
    with torch.set_grad_enabled(depth1_grad and torch.is_grad_enabled()):
        l1, hs, kv1 = base.stack(x1, pos, mask1, lora=False, want_hidden=True, want_kv=True)
    out = {"logits1": l1}
    if callable(hard):
        hard = hard(l1)
    if decider is not None and (hard is None or want_decider_inputs):
        with torch.no_grad():
            hc, tv = decider.features(hs, l1)
            prob = torch.sigmoid(decider.logit_from_features(hc, tv))
        out.update(prob=prob, hc=hc, tv=tv)
        if hard is None:
            thr = decider.threshold if threshold is None else torch.tensor(threshold, dtype=prob.dtype)
            hard = prob > thr
    if hard is None:
        hard = torch.zeros(B, T, dtype=torch.bool, device=dev)
    hard = hard & valid
    out["hard"] = hard
    n2 = int(hard.sum(1).max()) if B else 0
    if n2 == 0:
        out["logits"] = l1
        return out
    # Pack the hard tokens of each row, in position order, padded to n2.
    order = torch.argsort((~hard).to(torch.int8), dim=1, stable=True)[:, :n2]  # hard first
    qvalid = torch.gather(hard, 1, order)
    pos2 = order  # positions of the depth-2 queries
    l1h = torch.gather(l1, 1, pos2[..., None].expand(B, n2, l1.shape[-1]))
    x2 = soft_input(base, l1h.detach(), input_topk)
    # Duo-causal: depth-1 keys at p' <= p, depth-2 keys of hard tokens at p' <= p.
    m1 = (pos[:, None, :] <= pos2[:, :, None]) & valid[:, None, :]
    m2 = (pos2[:, None, :] <= pos2[:, :, None]) & qvalid[:, None, :]
    mask2 = torch.cat((m1, m2), dim=-1)
    l2, _, _ = base.stack(x2, pos2, mask2, lora=True, past=kv1)
    l2 = l2 * qvalid[..., None]
    final = l1.scatter_add(1, pos2[..., None].expand_as(l2), l2)
    out["logits"] = final
    return out


# ----------------------------------------------------------------------------- loading

def load_safetensors(path):
    from safetensors.torch import load_file
    return load_file(path)


def load_base(path, dtype=torch.float32):
    c = Config.load(path)
    base = Base(c)
    sd = {}
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            for fn in sorted(set(json.load(f)["weight_map"].values())):
                sd.update(load_safetensors(os.path.join(path, fn)))
    else:
        sd = load_safetensors(os.path.join(path, "model.safetensors"))
    sd = {k: v.to(dtype) for k, v in sd.items() if "rotary_emb" not in k}
    if c.tied:
        sd.pop("lm_head.weight", None)
    missing, unexpected = base.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "lora_" not in m]
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")
    return base


def load_lora(base, path):
    """PEFT adapter: lora/adapter_config.json + adapter_model.safetensors."""
    with open(os.path.join(path, "adapter_config.json")) as f:
        cfg = json.load(f)
    base.add_lora(cfg["r"], cfg["lora_alpha"])
    sd = load_safetensors(os.path.join(path, "adapter_model.safetensors"))
    for l, part, name, lin in base.linears():
        pre = f"base_model.model.model.layers.{l}.{part}.{name}"
        with torch.no_grad():
            lin.lora_A.copy_(sd[pre + ".lora_A.weight"])
            lin.lora_B.copy_(sd[pre + ".lora_B.weight"])
    return cfg


def load_tah(path):
    """(base with LoRA, decider, tah_config) from a reference-layout checkpoint."""
    base = load_base(path)
    load_lora(base, os.path.join(path, "lora"))
    with open(os.path.join(path, "tah_config.json")) as f:
        tcfg = json.load(f)
    blob = torch.load(os.path.join(path, "iter_decider.bin"), map_location="cpu", weights_only=True)
    # Like the reference: the config's kwargs build the decider; state_dict keys named
    # like a kwarg (threshold) are dropped when the kwarg is present.
    kw = dict(tcfg["iter_decider_kwargs"])
    kw["dtype"] = torch.float32
    dec = MLPIterDecider(**kw)
    sd = {k: v for k, v in blob["state_dict"].items() if k not in kw}
    missing, unexpected = dec.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if m != "threshold"]:
        raise ValueError(f"decider: missing {missing}, unexpected {unexpected}")
    dec.eval()
    return base, dec, tcfg


# ----------------------------------------------------------------------------- saving

def save_lora(base, out_dir, base_class="LlamaForCausalLM", dtype=torch.float32, d1=False):
    """PEFT layout. d1=False: the depth-2 adapter (the reference layout's `lora/`);
    d1=True: the depth-1 adapter, in the same layout (our artifact, merged at build time)."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    sd = {}
    for l, part, name, lin in base.linears():
        pre = f"base_model.model.model.layers.{l}.{part}.{name}"
        A, B = (lin.lora_d1_A, lin.lora_d1_B) if d1 else (lin.lora_A, lin.lora_B)
        sd[pre + ".lora_A.weight"] = A.detach().to(dtype).contiguous()
        sd[pre + ".lora_B.weight"] = B.detach().to(dtype).contiguous()
    save_file(sd, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {
        "alpha_pattern": {}, "auto_mapping": {"base_model_class": base_class,
                                              "parent_library": "transformers"},
        "base_model_name_or_path": "", "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "layers_pattern": None,
        "layers_to_transform": None, "lora_alpha": base.lora_d1_alpha if d1 else base.lora_alpha, "lora_dropout": 0.0,
        "modules_to_save": None, "peft_type": "LORA", "r": base.lora_d1_r if d1 else base.lora_r, "rank_pattern": {},
        "revision": None, "target_modules": [n for _, n in LINEARS], "task_type": None,
        "use_dora": False, "use_rslora": False,
    }
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def save_decider(dec, path):
    """torch.save({class, state_dict (plain dict), init_args}) like the reference."""
    torch.save({"class": "MLPIterDecider",
                "state_dict": {k: v.detach().clone() for k, v in dec.state_dict().items()},
                "init_args": dict(dec.init_args)}, path)


def tah_config(dec, input_topk, r, alpha):
    kw = dict(dec.init_args)
    kw["dtype"] = {"__dtype__": True, "__str__": "torch.float32"}
    return {
        "embedding_key": "model.embed_tokens", "max_iter": 2, "iter_decider": "MLPIterDecider",
        "iter_decider_kwargs": kw, "eval_iter_decider": None, "eval_iter_decider_kwargs": {},
        "input_updater_kwargs": {"topk": input_topk}, "adapter": "lora",
        "adapter_kwargs": {"r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
                           "target_modules": "all-linear", "bias": "none"},
        "train_loss": "NextTokenPredLoss", "train_loss_kwargs": {},
        "eval_loss": "NextTokenPredLoss", "eval_loss_kwargs": {},
    }
