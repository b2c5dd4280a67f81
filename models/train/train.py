#!/usr/bin/env python3
"""Trains a TaH model (or the plain-LoRA SFT baseline) on a HF llama/qwen base.

TaH recipe (stage 1 trains LoRAs only; the initial base weights stay as loaded):
  oracle   a token is hard where the frozen base's greedy next-token prediction
           (depth 1) differs from the label. Only the assistant turn has labels
           (as in SFT), so prompt tokens are never hard; the decider still sees
           them, as negatives, so that it learns to leave the prompt at depth 1.
  stage 1  LoRA trained under the oracle policy (hard tokens run depth 2 with the
           soft input and duo-causal attention; final logits = l1 + l2 there),
           next-token cross-entropy on the final logits of the assistant turn.
           The depth-1 pass is frozen, so the same pass also yields the oracle
           labels and the decider's input features (cached for stage 2).
  stage 2  decider trained with BCE on the oracle labels (backbone frozen),
           pos_weight = n_neg / n_pos; the threshold is chosen on validation.
With --r1 R (> 0) depth 1 learns too, as in the paper's stage 1 (which trains all
weights): a second, depth-1 LoRA changes the base weights themselves (it acts at
every depth); it is merged into the base when the checkpoint is written, so the
checkpoint's model.safetensors = base + s1·B1·A1 and depth 1 is an ordinary model.
The oracle is then *static*: hard = the frozen initial model (depth-1 LoRA off)
mispredicts the label (the paper's oracle uses a reference LLM's first-pass
mismatch; the spec and notes do not define it for a training backbone). The
decider's features come from the final (merged) depth-1 model in stage 2, its
labels from that static oracle, which is the set depth 2 was trained on.
SFT baseline (--mode sft): the same LoRA (rank, targets, data, steps, lr) on in a
single pass, next-token loss on the assistant turn; saved merged as a plain HF model.

    python train.py --base BASE_DIR --data data --out OUT_DIR --mode tah --steps 150
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tah_model as tm  # noqa: E402
from make_data import response_text  # noqa: E402


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ----------------------------------------------------------------------------- data

class ChatEncoder:
    """Renders the model's chat template (jinja2) and tokenizes like the engine
    (`tah run --chat`): prompt = template(user msg, add_generation_prompt);
    the answer's tokens follow the prompt's and end with the end-of-turn token."""

    def __init__(self, base_dir):
        import jinja2
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_file(os.path.join(base_dir, "tokenizer.json"))
        with open(os.path.join(base_dir, "tokenizer_config.json")) as f:
            tc = json.load(f)
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(Exception(m))
        self.tmpl = env.from_string(tc["chat_template"])
        self.special = {k: tc.get(k) for k in ("bos_token", "eos_token")}
        self.add_bos = bool(tc.get("add_bos_token"))
        self.eot = "<|im_end|>"

    def ids(self, text):
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if self.add_bos:
            ids = [self.tok.token_to_id(self.special["bos_token"])] + ids
        return ids

    def prompt(self, question):
        return self.tmpl.render(messages=[{"role": "user", "content": question}],
                                add_generation_prompt=True, **self.special)

    def example(self, row):
        p = self.ids(self.prompt(row["question"]))
        a = self.tok.encode(response_text(row["answer"]) + self.eot, add_special_tokens=False).ids
        return p, a


def load_rows(path, n=None):
    with open(path) as f:
        rows = [json.loads(x) for x in f]
    return rows[:n] if n else rows


def batches(examples, bs, seed):
    r = random.Random(seed)
    while True:
        idx = list(range(len(examples)))
        r.shuffle(idx)
        for i in range(0, len(idx) - bs + 1, bs):
            yield [examples[j] for j in idx[i:i + bs]]


def collate(batch):
    """ids (B,T), valid (B,T), labels (B,T) = next token or -100 outside the answer."""
    T = max(len(p) + len(a) for p, a in batch)
    B = len(batch)
    ids = torch.zeros(B, T, dtype=torch.long)
    valid = torch.zeros(B, T, dtype=torch.bool)
    nxt = torch.full((B, T), -100, dtype=torch.long)  # next token at every position
    ans = torch.full((B, T), -100, dtype=torch.long)  # next token where it is an answer token
    for b, (p, a) in enumerate(batch):
        s = p + a
        ids[b, :len(s)] = torch.tensor(s)
        valid[b, :len(s)] = True
        nxt[b, :len(s) - 1] = torch.tensor(s[1:])
        ans[b, len(p) - 1:len(s) - 1] = torch.tensor(a)
    return ids, valid, nxt, ans


# ----------------------------------------------------------------------------- stage 1

@torch.no_grad()
def static_oracle(base, ids, valid, ans):
    """Hard = the initial model (depth-1 LoRA off) mispredicts an answer token."""
    T = ids.shape[1]
    pos = torch.arange(T).expand_as(ids)
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None] & valid[:, None]
    base.set_d1(False)
    try:
        l1, _, _ = base.stack(base.model.embed_tokens(ids), pos, mask, lora=False)
    finally:
        base.set_d1(True)
    return (l1.argmax(-1) != ans) & (ans >= 0)


def train_lora(base, examples, args, mode, dec_shape=None):
    """Stage 1 (mode tah) or the SFT baseline (mode sft). Returns decider features
    (hc, tv, oracle) collected from the frozen depth-1 pass in tah mode with a
    frozen depth 1; with a depth-1 LoRA it returns the static oracle labels of
    the examples seen ({id(example): bool tensor over the answer tokens})."""
    d1 = args.r1 > 0
    params = list(base.lora_parameters()) + list(base.lora_d1_parameters())
    for p in base.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa
    feats = {"hc": [], "tv": [], "y": [], "ans": []}
    seen = {}
    probe = tm.MLPIterDecider(**dec_shape) if dec_shape and not d1 else None
    it = batches(examples, args.batch, args.seed)
    t0 = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * sched(step)
        batch = next(it)
        ids, valid, nxt, ans = collate(batch)
        if mode == "tah" and d1:
            hard = static_oracle(base, ids, valid, ans)
            for b, (p, a) in enumerate(batch):
                seen[id(batch[b])] = hard[b, len(p) - 1:len(p) - 1 + len(a)].clone()
            out = tm.tah_forward(base, ids, valid=valid, hard=hard, input_topk=args.input_topk,
                                 depth1_grad=True)
            logits = out["logits"]
        elif mode == "tah":
            def oracle(l1):  # labelled (= answer) positions only; prompt tokens never hard
                return (l1.argmax(-1) != ans) & (ans >= 0)
            out = tm.tah_forward(base, ids, valid=valid, hard=oracle, decider=probe,
                                 input_topk=args.input_topk, want_decider_inputs=True)
            logits = out["logits"]
            m = nxt >= 0
            feats["hc"].append(out["hc"][m].half())
            feats["tv"].append(out["tv"][m].half())
            feats["y"].append(out["hard"][m])
            feats["ans"].append((ans >= 0)[m])
        else:
            pos = torch.arange(ids.shape[1]).expand_as(ids)
            mask = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()[None] & valid[:, None]
            logits, _, _ = base.stack(base.model.embed_tokens(ids), pos, mask, lora=True)
        m = ans >= 0
        loss = F.cross_entropy(logits[m], ans[m])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if mode == "tah" and step == 0:
            b0 = ans[0] >= 0
            toks = [(args.tok.decode([int(t)]), bool(h)) for t, h in zip(ans[0][b0], out["hard"][0][b0])]
            log("[tah] oracle on a sample answer ([x] = hard): "
                + "".join(f"[{t}]" if h else t for t, h in toks).replace("\n", "\\n"))
        if step % args.log_every == 0 or step == args.steps - 1:
            extra = ""
            if mode == "tah":
                h = out["hard"]
                extra = (f" hard(all) {h[nxt >= 0].float().mean():.3f}"
                         f" hard(answer) {h[m].float().mean():.3f}")
            log(f"[{mode}] step {step} loss {loss.item():.4f} lr {args.lr * sched(step):.2e}"
                f" tokens {int(valid.sum())}{extra} {(time.time() - t0) / (step + 1):.2f}s/step")
    log(f"[{mode}] stage done in {time.time() - t0:.0f}s")
    if mode == "tah" and d1:
        return seen
    return {k: torch.cat(v) for k, v in feats.items()} if mode == "tah" else None


@torch.no_grad()
def depth1_features(base, dec, examples, bs, labels):
    """Decider inputs from a depth-1 pass of the current model, labels from
    `labels` ({id(example): bool over its answer tokens}); prompt positions are
    negatives, like in collect_features."""
    feats = {"hc": [], "tv": [], "y": [], "ans": []}
    for i in range(0, len(examples), bs):
        batch = examples[i:i + bs]
        ids, valid, nxt, ans = collate(batch)
        T = ids.shape[1]
        pos = torch.arange(T).expand_as(ids)
        mask = torch.ones(T, T, dtype=torch.bool).tril()[None] & valid[:, None]
        l1, hs, _ = base.stack(base.model.embed_tokens(ids), pos, mask, lora=False, want_hidden=True)
        hc, tv = dec.features(hs, l1)
        y = torch.zeros_like(valid)
        for b, (p, a) in enumerate(batch):
            y[b, len(p) - 1:len(p) - 1 + len(a)] = labels[id(batch[b])]
        m = nxt >= 0
        feats["hc"].append(hc[m].half())
        feats["tv"].append(tv[m].half())
        feats["y"].append(y[m])
        feats["ans"].append((ans >= 0)[m])
    return {k: torch.cat(v) for k, v in feats.items()}


@torch.no_grad()
def collect_features(base, dec, examples, bs, input_topk):
    feats = {"hc": [], "tv": [], "y": [], "ans": []}
    for i in range(0, len(examples), bs):
        ids, valid, nxt, ans = collate(examples[i:i + bs])
        out = tm.tah_forward(base, ids, valid=valid, hard=lambda l1: (l1.argmax(-1) != ans) & (ans >= 0),
                             decider=dec, input_topk=input_topk, want_decider_inputs=True)
        m = nxt >= 0
        # only depth 1 matters here; depth 2 ran needlessly — cheap enough on val
        feats["hc"].append(out["hc"][m].half())
        feats["tv"].append(out["tv"][m].half())
        feats["y"].append(out["hard"][m])
        feats["ans"].append((ans >= 0)[m])
    return {k: torch.cat(v) for k, v in feats.items()}


# ----------------------------------------------------------------------------- stage 2

def train_decider(dec, tr, va, args):
    y = tr["y"].float()
    n_pos, n_neg = float(y.sum()), float((1 - y).sum())
    pos_weight = torch.tensor(n_neg / max(n_pos, 1.0))
    log(f"[decider] {len(y)} train tokens, positive rate {n_pos / len(y):.3f}, pos_weight {pos_weight:.2f}")
    params = [p for n, p in dec.named_parameters() if n != "threshold"]
    opt = torch.optim.AdamW(params, lr=args.dec_lr, weight_decay=0.01)
    N = len(y)
    t0 = time.time()
    total = args.dec_epochs * math.ceil(N / args.dec_batch)
    s = 0
    for ep in range(args.dec_epochs):
        dec.train()
        perm = torch.randperm(N)
        for i in range(0, N, args.dec_batch):
            j = perm[i:i + args.dec_batch]
            for g in opt.param_groups:
                g["lr"] = args.dec_lr * 0.5 * (1 + math.cos(math.pi * s / total))
            z = dec.logit_from_features(tr["hc"][j].float(), tr["tv"][j].float())
            loss = F.binary_cross_entropy_with_logits(z, y[j], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            s += 1
        dec.eval()
        p = decider_probs(dec, va)
        log(f"[decider] epoch {ep} train loss {loss.item():.4f} val AUC {auc(p, va['y']):.3f}"
            f" {time.time() - t0:.0f}s")
    return pos_weight.item()


@torch.no_grad()
def decider_probs(dec, f):
    out = []
    for i in range(0, len(f["y"]), 4096):
        out.append(torch.sigmoid(dec.logit_from_features(f["hc"][i:i + 4096].float(),
                                                         f["tv"][i:i + 4096].float())))
    return torch.cat(out)


def auc(p, y):
    y = y.bool()
    order = torch.argsort(p)
    ranks = torch.empty_like(p)
    ranks[order] = torch.arange(1, len(p) + 1, dtype=p.dtype)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def pick_threshold(p, y, ans):
    """Threshold maximising F1 of the predicted hard set on answer tokens (val)."""
    y, ans = y.bool(), ans.bool()
    best = (0.0, 0.5)
    for t in [i / 100 for i in range(5, 100)]:
        pred = (p > t) & ans
        tp = float((pred & y).sum())
        prec = tp / max(float(pred.sum()), 1)
        rec = tp / max(float((y & ans).sum()), 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-9)
        if f1 > best[0]:
            best = (f1, t)
    return best


# ----------------------------------------------------------------------------- saving

def copy_tokenizer(src, dst):
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=["tah", "sft"], default="tah")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--r1", type=int, default=0,
                    help="rank of the depth-1 LoRA (merged into the base at the end); 0 = depth 1 frozen")
    ap.add_argument("--alpha1", type=float, default=None, help="default 2·r1")
    ap.add_argument("--lora-dtype", default="float16",
                    help="LoRA weights are rounded to this dtype before saving (size)")
    ap.add_argument("--input-topk", type=int, default=100)
    ap.add_argument("--dec-topk", type=int, default=100)
    ap.add_argument("--dec-layers", default="")
    ap.add_argument("--dec-dims", default="128,128,128")
    ap.add_argument("--dec-expansion", type=int, default=2)
    ap.add_argument("--dec-epochs", type=int, default=6)
    ap.add_argument("--dec-batch", type=int, default=512)
    ap.add_argument("--dec-lr", type=float, default=1e-3)
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--dec-train-problems", type=int, default=0,
                    help="with --r1: decider features from at most this many of the problems seen (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()

    base = tm.load_base(args.base)
    enc = ChatEncoder(args.base)
    args.tok = enc.tok
    train_ex = [enc.example(r) for r in load_rows(os.path.join(args.data, "train.jsonl"))]
    val_ex = [enc.example(r) for r in load_rows(os.path.join(args.data, "val.jsonl"), args.n_val)]
    log(f"{len(train_ex)} train examples, mean length "
        f"{sum(len(p) + len(a) for p, a in train_ex) / len(train_ex):.0f} tokens")
    base.add_lora(args.r, args.alpha)
    n_lora = sum(p.numel() for p in base.lora_parameters())
    log(f"LoRA r={args.r} alpha={args.alpha}: {n_lora} trainable parameters")
    n_d1 = 0
    if args.r1 > 0:
        if args.mode != "tah":
            raise SystemExit("--r1 is for --mode tah")
        args.alpha1 = args.alpha1 if args.alpha1 is not None else 2.0 * args.r1
        base.add_lora_d1(args.r1, args.alpha1)
        n_d1 = sum(p.numel() for p in base.lora_d1_parameters())
        log(f"depth-1 LoRA r={args.r1} alpha={args.alpha1}: {n_d1} trainable parameters"
            f" (total {n_lora + n_d1})")
    c = base.c
    layers = [int(x) for x in args.dec_layers.split(",")] if args.dec_layers else \
        sorted({round(c.layers * f) for f in (0.2, 0.47, 0.73)} | {c.layers})
    dec_shape = dict(topk=args.dec_topk, hidden_states_size=c.hidden,
                     hidden_states_layer_nums=layers,
                     hidden_dims=[int(x) for x in args.dec_dims.split(",")],
                     expansion_factor=args.dec_expansion, dropout_rate=0.0,
                     normalize_input=False, threshold=0.5, dtype=torch.float32, max_iter=2)
    os.makedirs(args.out, exist_ok=True)
    report = {"args": {k: v for k, v in vars(args).items() if k != "tok"}, "lora_params": n_lora,
              "lora_d1_params": n_d1}

    feats = train_lora(base, train_ex, args, args.mode, dec_shape if args.mode == "tah" else None)
    report["stage1_seconds"] = time.time() - t_start
    torch.save({n: p.detach() for n, p in base.named_parameters() if "lora_" in n},
               os.path.join(args.out, "stage1_loras.pt"))
    ldt = getattr(torch, args.lora_dtype)
    with torch.no_grad():
        for p in list(base.lora_parameters()) + list(base.lora_d1_parameters()):
            p.copy_(p.to(ldt).float())

    if args.mode == "sft":
        # merge W += s·B·A and save a plain HF checkpoint
        from safetensors.torch import save_file
        sd = {}
        with torch.no_grad():
            for l, part, name, lin in base.linears():
                lin.weight += (lin.lora_B @ lin.lora_A) * lin.scaling
        for k, v in base.state_dict().items():
            if "lora_" in k:
                continue
            sd[k] = v.contiguous()
        save_file(sd, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
        shutil.copy(os.path.join(args.base, "config.json"), os.path.join(args.out, "config.json"))
        copy_tokenizer(args.base, args.out)
    else:
        t1 = time.time()
        dec = tm.MLPIterDecider(**dec_shape)
        if args.r1 > 0:
            # static oracle on val (needs the initial weights), then merge the
            # depth-1 LoRA and take every decider input from the final depth 1
            val_lab = {}
            for i in range(0, len(val_ex), args.batch):
                batch = val_ex[i:i + args.batch]
                ids, valid, nxt, ans = collate(batch)
                hard = static_oracle(base, ids, valid, ans)
                for b, (p_, a_) in enumerate(batch):
                    val_lab[id(batch[b])] = hard[b, len(p_) - 1:len(p_) - 1 + len(a_)].clone()
            tm.save_lora(base, os.path.join(args.out, "lora_depth1"), base_class=Config_arch(base),
                         dtype=ldt, d1=True)
            base.merge_d1()
            seen = feats
            tr_ex = [e for e in train_ex if id(e) in seen]
            if args.dec_train_problems:
                tr_ex = tr_ex[:args.dec_train_problems]
            log(f"[decider] features from the merged depth 1: {len(tr_ex)} train, {len(val_ex)} val problems")
            feats = depth1_features(base, dec, tr_ex, args.batch, seen)
            val = depth1_features(base, dec, val_ex, args.batch, val_lab)
            log(f"[decider] features done {time.time() - t1:.0f}s")
        else:
            val = collect_features(base, dec, val_ex, args.batch, args.input_topk)
        pw = train_decider(dec, feats, val, args)
        p = decider_probs(dec, val)
        f1, thr = pick_threshold(p, val["y"], val["ans"])
        a = val["ans"].bool()
        log(f"[decider] threshold {thr} (val F1 {f1:.3f} on answer tokens): predicted hard rate "
            f"answer {float((p[a] > thr).float().mean()):.3f} (oracle {float(val['y'][a].float().mean()):.3f}),"
            f" all {float((p > thr).float().mean()):.3f} (oracle {float(val['y'].float().mean()):.3f})")
        dec.init_args["threshold"] = thr
        with torch.no_grad():
            dec.threshold.fill_(thr)
        report.update(stage2_seconds=time.time() - t1, pos_weight=pw, threshold=thr, val_f1=f1,
                      val_auc=auc(p, val["y"]),
                      oracle_hard_rate_val={"answer": float(val["y"][a].float().mean()),
                                            "all": float(val["y"].float().mean())})
        # the checkpoint, in the reference layout
        shutil.copy(os.path.join(args.base, "config.json"), os.path.join(args.out, "config.json"))
        src = os.path.join(args.base, "model.safetensors")
        dst = os.path.join(args.out, "model.safetensors")
        if args.r1 > 0:  # the base with the depth-1 LoRA merged
            from safetensors.torch import save_file
            sd = {k: v.contiguous() for k, v in base.state_dict().items() if "lora_" not in k}
            save_file(sd, dst, metadata={"format": "pt"})
        elif os.path.abspath(src) != os.path.abspath(dst):
            shutil.copy(src, dst)
        copy_tokenizer(args.base, args.out)
        arch = Config_arch(base)
        tm.save_lora(base, os.path.join(args.out, "lora"), base_class=arch)
        tm.save_decider(dec, os.path.join(args.out, "iter_decider.bin"))
        with open(os.path.join(args.out, "tah_config.json"), "w") as f:
            json.dump(tm.tah_config(dec, args.input_topk, args.r, args.alpha), f, indent=2)
    report["total_seconds"] = time.time() - t_start
    with open(os.path.join(args.out, "train_report.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    log(f"wrote {args.out} in {report['total_seconds']:.0f}s")


def Config_arch(base):
    return {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM"}[base.c.model_type]


if __name__ == "__main__":
    main()
