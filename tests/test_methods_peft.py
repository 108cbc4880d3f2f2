"""The LoRA-family methods against Hugging Face PEFT on the same GPT-2 weights, in float64.

Base: a small GPT2LMHeadModel with every parameter randomised, in float64, loaded both by transformers
and by tinylora.model.hf_gpt2.load_gpt2. PEFT adapts GPT-2's fused c_attn (q, k, v rows) as one
module; tinylora adapts q, k and v separately. The mapping used here is exact both ways:

    PEFT c_attn  A (R, C), B (3C, R), m (3C,)    tinylora q, k, v: ONE shared A Parameter (R, C),
                                                 B_q, B_k, B_v = row blocks of B, m_q, m_k, m_v likewise

(DoRA's norm is per output row, so row block t of ‖W0 + sBA‖_c is ‖W0_t + s B_t A‖_c.) Sharing the A
Parameter makes gradients add up as PEFT's do, so logits, EVERY gradient and several SGD steps of
training can be compared, not logits alone. c_proj, c_fc and mlp.c_proj map one to one.
Tolerance: 1e-12 absolute in float64 (both libraries run the same sums in a different order).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, random_hf_gpt2

import tinylora
from tinylora.model.hf_gpt2 import load_gpt2
from tinylora.optim import SGD

pytestmark = pytest.mark.ref

HF_SIZES = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=32, bos_token_id=None, eos_token_id=None)
C = HF_SIZES["n_embd"]
ATOL = 1e-12  # float64: same math, different summation order
IDX = np.random.default_rng(1).integers(0, HF_SIZES["vocab_size"], size=(2, 10))
TARGETS = np.random.default_rng(3).integers(0, HF_SIZES["vocab_size"], size=(2, 10))
UPSTREAM = np.random.default_rng(2).normal(size=(2, 10, HF_SIZES["vocab_size"]))  # random dL/dlogits
PLACES = {"attn.c_attn": ("attn", ("q", "k", "v")), "attn.c_proj": ("attn", ("o",)),
          "mlp.c_fc": ("mlp", ("fc",)), "mlp.c_proj": ("mlp", ("proj",))}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """(torch, peft, load_hf, base_dir): load_hf() returns a fresh float64 HF copy of the randomised base."""
    base = tmp_path_factory.mktemp("methods_peft_base")
    torch, transformers, peft = random_hf_gpt2(base, HF_SIZES)

    def load_hf():
        return transformers.GPT2LMHeadModel.from_pretrained(base, torch_dtype=torch.float64).eval()

    return torch, peft, load_hf, base


def peft_model(ref, seed=1, randomise=True, **lora_config):
    """A PEFT model on c_attn, c_proj, c_fc, with every LoRA tensor randomised (nonzero B, m off ‖W0‖)."""
    torch, peft, load_hf, _ = ref
    config = peft.LoraConfig(target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True, **lora_config)
    hf = peft.get_peft_model(load_hf(), config).eval()
    if randomise:
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    p.normal_(0.0, 0.2)
                elif "lora_magnitude" in name:
                    p.mul_(1.0 + 0.3 * torch.rand_like(p))
    return hf


def peft_adapters(hf):
    """{(block, HF module): {"A": tensor, "B": tensor, "m": tensor or absent}} of a PEFT GPT-2 model."""
    found = {}
    for name, p in hf.named_parameters():
        parts = name.split(".")
        if "h" not in parts:
            continue
        i = int(parts[parts.index("h") + 1])
        module = ".".join(parts[parts.index("h") + 2:parts.index("h") + 4])
        for key, short in (("lora_A", "A"), ("lora_B", "B"), ("lora_magnitude_vector", "m"), ("lora_E", "E")):
            if key in parts:
                found.setdefault((i, module), {})[short] = p
    return found


def mirror(tiny, hf):
    """Copy PEFT's adapters into tinylora's layers (already applied with matching r, α), tying q, k, v's A.

    Returns [(tinylora tensors, how to assemble them, PEFT tensor)] for comparing gradients and values.
    """
    pairs = []
    for (i, module), tensors in sorted(peft_adapters(hf).items()):
        parent_name, targets = PLACES[module]
        parent = getattr(tiny.blocks[i], parent_name)
        layers = [getattr(parent, t) for t in targets]
        shared = layers[0].lora_A
        shared.data[...] = tensors["A"].detach().numpy()
        for layer in layers[1:]:
            layer.lora_A = shared  # one Parameter, as PEFT's one A
        rows = len(targets)
        for row, layer in enumerate(layers):
            block = slice(row * C, (row + 1) * C) if rows == 3 else slice(None)
            layer.lora_B.data[...] = tensors["B"].detach().numpy()[block]
            if "m" in tensors:
                layer.magnitude.data[...] = tensors["m"].detach().numpy()[block]
        if "E" in tensors:  # AdaLoRA's Λ, (r, 1) in PEFT, (r,) here; only one-to-one modules
            layers[0].lora_E.data[...] = tensors["E"].detach().numpy().reshape(-1)
            pairs.append(([layers[0].lora_E], "one", tensors["E"]))
        pairs.append(([shared], "one", tensors["A"]))
        pairs.append(([layer.lora_B for layer in layers], "rows", tensors["B"]))
        if "m" in tensors:
            pairs.append(([layer.magnitude for layer in layers], "rows", tensors["m"]))
    return pairs


def tiny_forward_backward(tiny):
    logits = tiny(tinylora.tensor(IDX))[0]
    logits.backward(tinylora.tensor(UPSTREAM))
    return logits.detach().numpy()


def hf_forward_backward(torch, hf):
    logits = hf(input_ids=torch.tensor(IDX)).logits
    logits.backward(torch.tensor(UPSTREAM))
    return logits.detach().numpy()


def assemble(tensors, how, grad=False):
    arrays = [t.grad.numpy() if grad else t.detach().numpy() for t in tensors]
    return arrays[0] if how == "one" else np.concatenate(arrays)


def assert_logits_and_gradients_equal(ref, tiny, hf):
    """Logits and every adapter gradient of one forward/backward with a random upstream gradient."""
    torch = ref[0]
    pairs = mirror(tiny, hf)
    assert_close(tiny_forward_backward(tiny), hf_forward_backward(torch, hf), rtol=0, atol=ATOL, what="logits")
    trainable = {id(p) for p in tiny.parameters() if p.requires_grad}
    compared = set()
    for tensors, how, theirs in pairs:
        assert theirs.grad is not None and float(theirs.grad.abs().max()) > 1e-3  # a real gradient
        ours = assemble(tensors, how, grad=True)
        assert_close(ours, theirs.grad.numpy().reshape(ours.shape), rtol=0, atol=ATOL, what="gradient")
        compared |= {id(t) for t in tensors}
    assert compared == trainable  # every trainable tinylora tensor was compared
    return pairs


def train_both(ref, tiny, hf, steps=20, lr=0.1):
    """`steps` plain-SGD steps on the cross-entropy of TARGETS in both libraries; returns both final logits.

    (A cross-entropy, not the linear loss of one backward: that one grows without bound, and its
    training amplifies the libraries' rounding differences step by step, for plain LoRA as much.)
    """
    torch = ref[0]
    mirror(tiny, hf)
    opt = SGD(tiny.named_parameters(), lr=lr)
    hf_params = [p for p in hf.parameters() if p.requires_grad]
    hf_opt = torch.optim.SGD(hf_params, lr=lr)
    vocab = HF_SIZES["vocab_size"]
    for _ in range(steps):
        opt.zero_grad()
        logits = tiny(tinylora.tensor(IDX))[0]
        tinylora.functional.cross_entropy(logits.reshape(-1, vocab), tinylora.tensor(TARGETS.reshape(-1))).backward()
        opt.step()
        hf_opt.zero_grad()
        logits = hf(input_ids=torch.tensor(IDX)).logits
        torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), torch.tensor(TARGETS.reshape(-1))).backward()
        hf_opt.step()
    with tinylora.no_grad():
        ours = tiny(tinylora.tensor(IDX))[0].numpy()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(IDX)).logits.numpy()
    return ours, theirs


def merged_c_attn(tiny, i):
    """tinylora's merged q, k, v weights stacked as HF's c_attn Conv1D weight (C, 3C)."""
    attn = tiny.blocks[i].attn
    return np.concatenate([getattr(attn, t).base.weight.data for t in ("q", "k", "v")]).T


def tiny_model(ref, apply, **kwargs):
    """tinylora's float64 copy of the base with `apply` on every module PEFT adapts."""
    tiny = load_gpt2(ref[3], dtype="float64").eval()
    return apply(tiny, targets=("q", "k", "v", "o", "fc", "proj"), **kwargs)


# ------------------------------------------------------------------ DoRA
def test_dora_logits_and_every_gradient_equal_peft(ref):
    from tinylora.methods.dora import apply_dora

    hf = peft_model(ref, r=3, lora_alpha=5, use_dora=True)
    tiny = tiny_model(ref, apply_dora, r=3, alpha=5)
    assert_logits_and_gradients_equal(ref, tiny, hf)


@pytest.mark.slow  # ~8 s: 20 steps in both libraries
def test_dora_training_and_merged_weights_equal_peft(ref):
    from tinylora.methods.dora import apply_dora
    from tinylora.lora import merge_lora

    hf = peft_model(ref, r=2, lora_alpha=4, use_dora=True)
    tiny = tiny_model(ref, apply_dora, r=2, alpha=4)
    ours, theirs = train_both(ref, tiny, hf)
    assert_close(ours, theirs, rtol=0, atol=ATOL, what="logits after 20 SGD steps")
    merge_lora(tiny)
    merged = hf.merge_and_unload()
    for i in range(HF_SIZES["n_layer"]):
        h = merged.transformer.h[i]
        assert_close(merged_c_attn(tiny, i), h.attn.c_attn.weight.detach().numpy(), rtol=0, atol=ATOL, what="c_attn")
        assert_close(tiny.blocks[i].mlp.fc.base.weight.data.T, h.mlp.c_fc.weight.detach().numpy(), rtol=0,
                     atol=ATOL, what="c_fc")


# ------------------------------------------------------------------ rsLoRA (alone and with DoRA)
@pytest.mark.parametrize("use_dora", [False, True])
def test_rslora_logits_and_every_gradient_equal_peft(ref, use_dora):
    from tinylora.methods.dora import apply_dora
    from tinylora.methods.rslora import apply_rslora

    hf = peft_model(ref, r=4, lora_alpha=3, use_rslora=True, use_dora=use_dora)
    if use_dora:
        tiny = tiny_model(ref, apply_dora, r=4, alpha=3, rslora=True)
    else:
        tiny = tiny_model(ref, apply_rslora, r=4, alpha=3)
    assert tiny.blocks[0].attn.q.scaling == 1.5  # α/√r
    assert_logits_and_gradients_equal(ref, tiny, hf)


# ------------------------------------------------------------------ PiSSA and OLoRA
# (float32: PEFT refuses float64 for PiSSA)
def _align_signs(ours_A, ours_B, theirs_A):
    """Singular vectors are defined up to sign: flip our (A row i, B column i) pairs to match theirs."""
    signs = np.sign(np.sum(ours_A * theirs_A, axis=1))  # (r,)
    return ours_A * signs[:, None], ours_B * signs[None, :]


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_olora_factors_equal_peft_on_a_linear(ref, init):
    """On a torch nn.Linear (PEFT's OLoRA does not handle GPT-2's transposed Conv1D: it takes the QR of
    the (in, out) tensor and fails with a shape error), A, B and W_res equal PEFT's."""
    torch, peft = ref[0], ref[1]
    from tinylora.methods.pissa import PiSSALinear

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 20))
    w0, b0 = net[0].weight.detach().numpy().copy(), net[0].bias.detach().numpy().copy()
    hf = peft.get_peft_model(net, peft.LoraConfig(r=3, lora_alpha=6, target_modules=["0"], init_lora_weights=init))
    layer = hf.base_model.model[0]
    theirs_A = layer.lora_A["default"].weight.detach().numpy()
    theirs_B = layer.lora_B["default"].weight.detach().numpy()
    theirs_res = layer.base_layer.weight.detach().numpy()

    linear = tinylora.nn.Linear(12, 20)
    linear.weight.data[...], linear.bias.data[...] = w0, b0
    ours = PiSSALinear(linear, r=3, alpha=6, init=init)
    A, B = ours.lora_A.data, ours.lora_B.data
    if init == "pissa":
        A, B = _align_signs(A, B, theirs_A)
    atol = 1e-5  # float32 decompositions by two LAPACK call paths
    assert_close(A, theirs_A, rtol=0, atol=atol, what="A")
    assert_close(B, theirs_B, rtol=0, atol=atol, what="B")
    assert_close(ours.base.weight.data, theirs_res, rtol=0, atol=atol, what="W_res")


def test_pissa_on_gpt2_equals_peft_and_its_converted_adapter_loads_in_peft(ref, tmp_path):
    """PiSSA on c_proj, c_fc, mlp.c_proj (one to one; on the fused c_attn PEFT decomposes q, k, v
    together, a different initialisation from tinylora's per-matrix one). Then train-like changes,
    convert to plain LoRA of rank 2r on the original W0, export, and load into PEFT on the ORIGINAL base."""
    torch, peft, load_hf, base = ref
    from tinylora.lora import export_peft, lora_layers
    from tinylora.methods.pissa import apply_pissa, pissa_to_lora

    config = peft.LoraConfig(r=2, lora_alpha=2, target_modules=["attn.c_proj", "c_fc", "mlp.c_proj"],
                             fan_in_fan_out=True, init_lora_weights="pissa")
    hf = peft.get_peft_model(load_hf().float(), config).eval()
    tiny = apply_pissa(load_gpt2(base), r=2, alpha=2, targets=("o", "fc", "proj")).eval()
    for (i, module), tensors in peft_adapters(hf).items():
        layer = getattr(getattr(tiny.blocks[i], PLACES[module][0]), PLACES[module][1][0])
        A, B = _align_signs(layer.lora_A.data, layer.lora_B.data, tensors["A"].detach().numpy())
        assert_close(A, tensors["A"].detach().numpy(), rtol=0, atol=1e-5, what=f"h.{i}.{module} A")
        assert_close(B, tensors["B"].detach().numpy(), rtol=0, atol=1e-5, what=f"h.{i}.{module} B")
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(IDX)).logits.numpy()
    with tinylora.no_grad():
        ours = tiny(tinylora.tensor(IDX))[0].numpy()
    assert_close(ours, expected, rtol=0, atol=1e-5, what="logits at init (float32)")

    rng = np.random.default_rng(0)
    for _, layer in lora_layers(tiny):
        layer.lora_B.data += rng.normal(0, 0.05, layer.lora_B.shape).astype(np.float32)
    with tinylora.no_grad():
        trained = tiny(tinylora.tensor(IDX))[0].numpy()
    export_peft(pissa_to_lora(tiny), tmp_path)
    loaded = peft.PeftModel.from_pretrained(load_hf().float(), tmp_path).eval()
    with torch.no_grad():
        theirs = loaded(input_ids=torch.tensor(IDX)).logits.numpy()
    assert np.abs(trained - expected).max() > 1e-3  # the "training" changed the function
    assert_close(theirs, trained, rtol=0, atol=1e-5, what="converted PiSSA adapter in PEFT")


# ------------------------------------------------------------------ AdaLoRA (one-to-one modules: on the fused
# c_attn PEFT has ONE Λ for the q, k and v rows, which three separate tinylora layers cannot share)
ADALORA_TARGETS = ["attn.c_proj", "c_fc", "mlp.c_proj"]


def _adalora_pair(ref, init_r=4, lora_alpha=8, **schedule):
    from tinylora.methods.adalora import apply_adalora

    torch, peft = ref[0], ref[1]
    config = peft.AdaLoraConfig(init_r=init_r, lora_alpha=lora_alpha, target_modules=ADALORA_TARGETS,
                                fan_in_fan_out=True, **schedule)
    hf = peft.get_peft_model(ref[2](), config).eval()
    # PEFT scales by lora_alpha / (ranknum + 1e-5), with ranknum = init_r held in a float32 tensor
    ranknum = next(m.ranknum["default"] for m in hf.modules() if hasattr(m, "ranknum"))
    alpha = lora_alpha / (ranknum.item() + 1e-5) * init_r
    tiny = apply_adalora(load_gpt2(ref[3], dtype="float64").eval(), init_r=init_r, alpha=alpha,
                         targets=("o", "fc", "proj"))
    return hf, tiny


def _hf_adalora_loss(torch, hf):
    """PEFT's AdaLoraModel.forward adds γ R(P, Q) to the wrapped model's `.loss`. Two details, both PEFT's:
    HF's own GPT-2 loss casts the logits to float32, so the wrapped forward is given a float64
    cross-entropy here (shifted like HF's labels); and the term is added only by `hf.base_model(...)`:
    in PEFT 0.21.2 calling the PeftModel wrapper `hf(...)` returns the loss WITHOUT it."""
    inner = hf.base_model.model
    if not hasattr(inner, "_plain_forward"):
        inner._plain_forward = inner.forward

        def forward_with_float64_loss(input_ids):
            out = inner._plain_forward(input_ids=input_ids)
            vocab = out.logits.shape[-1]
            out.loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, vocab),
                                                         input_ids[:, 1:].reshape(-1))
            return out

        inner.forward = forward_with_float64_loss
    return hf.base_model(input_ids=torch.tensor(IDX)).loss


def _tiny_adalora_loss(tiny, gamma):
    from tinylora.methods.adalora import orthogonal_regulariser

    vocab = HF_SIZES["vocab_size"]
    logits = tiny(tinylora.tensor(IDX))[0][:, :-1]  # predict token t+1 from t, as HF's labels do
    ce = tinylora.functional.cross_entropy(logits.reshape(-1, vocab), tinylora.tensor(IDX[:, 1:].reshape(-1)))
    return ce + orthogonal_regulariser(tiny) * gamma


def test_adalora_loss_and_every_gradient_equal_peft(ref):
    torch = ref[0]
    hf, tiny = _adalora_pair(ref, total_step=10)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "lora_E" in name:
                p.normal_(0.0, 0.5)  # Λ ≠ 0, so P and Q get gradients
    pairs = mirror(tiny, hf)
    ours = _tiny_adalora_loss(tiny, gamma=0.5)
    theirs = _hf_adalora_loss(torch, hf)
    assert_close(ours.item(), theirs.item(), rtol=0, atol=ATOL, what="loss with orthogonality term")
    ours.backward()
    theirs.backward()
    for tensors, how, p in pairs:
        grad = assemble(tensors, how, grad=True)
        assert float(p.grad.abs().max()) > 1e-4
        assert_close(grad, p.grad.numpy().reshape(grad.shape), rtol=0, atol=ATOL, what="gradient")


@pytest.mark.slow  # ~10 s: 14 steps in both libraries with masking
def test_adalora_training_with_rank_allocation_equals_peft(ref):
    """SGD with PEFT's update_and_allocate and tinylora's RankAllocator.step: the same triplets are
    pruned at the same steps, and the logits after the final (frozen-pattern) phase agree."""
    from tinylora.methods.adalora import RankAllocator

    torch = ref[0]
    schedule = dict(target_r=2, tinit=2, tfinal=4, deltaT=2, total_step=14)
    hf, tiny = _adalora_pair(ref, **schedule)
    mirror(tiny, hf)
    allocator = RankAllocator(tiny, target_r=2, total_step=14, tinit=2, tfinal=4, delta_t=2)
    opt = SGD(tiny.named_parameters(), lr=0.5)
    # PEFT 0.21.2 leaves `ranknum` (init_r, the constant divisor of the scaling) with requires_grad=True,
    # so an optimizer over every trainable parameter would train it; AdaLoRA holds it fixed: leave it out
    hf_opt = torch.optim.SGD([p for n, p in hf.named_parameters() if p.requires_grad and "ranknum" not in n], lr=0.5)
    for step in range(1, 15):
        opt.zero_grad()
        _tiny_adalora_loss(tiny, gamma=0.5).backward()
        opt.step()
        allocator.step(step)
        hf_opt.zero_grad()
        _hf_adalora_loss(torch, hf).backward()
        hf_opt.step()
        hf.base_model.update_and_allocate(step)
        theirs = {(i, m): t["E"].detach().numpy().reshape(-1) != 0 for (i, m), t in peft_adapters(hf).items()}
        ours = {(i, m): adalora_E(tiny, i, m) != 0 for (i, m) in theirs}
        assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours), f"step {step}"
    assert sum(allocator.rank_allocation().values()) == 2 * 3 * HF_SIZES["n_layer"]  # target_r × #matrices
    with tinylora.no_grad():
        logits = tiny(tinylora.tensor(IDX))[0].numpy()
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(IDX)).logits.numpy()
    assert_close(logits, expected, rtol=0, atol=ATOL, what="logits after AdaLoRA training")


def adalora_E(tiny, i, module):
    parent, targets = PLACES[module]
    return getattr(getattr(tiny.blocks[i], parent), targets[0]).lora_E.data


# ------------------------------------------------------------------ export: DoRA and rsLoRA adapters that PEFT loads
@pytest.mark.parametrize("kind", ["dora", "rslora", "dora+rslora", "dora on q,v + lora on fc"])
def test_export_method_peft_loads_in_peft(ref, tmp_path, kind):
    torch, peft, load_hf, base = ref
    from tinylora.lora import apply_lora, lora_layers
    from tinylora.methods.dora import apply_dora
    from tinylora.methods.peft_export import export_method_peft
    from tinylora.methods.rslora import apply_rslora

    tiny = load_gpt2(base, dtype="float64").eval()
    if kind == "rslora":
        apply_rslora(tiny, r=4, alpha=3, targets=("q", "v", "fc"))
    elif kind == "dora on q,v + lora on fc":
        apply_lora(apply_dora(tiny, r=2, alpha=4, targets=("q", "v")), r=2, alpha=4, targets=("fc",))
    else:
        apply_dora(tiny, r=4, alpha=3, targets=("q", "v", "fc", "proj"), rslora=kind == "dora+rslora")
    rng = np.random.default_rng(0)
    for _, layer in lora_layers(tiny):
        layer.lora_B.data[...] = rng.normal(0, 0.2, layer.lora_B.shape)
        if hasattr(layer, "magnitude"):
            layer.magnitude.data *= 1 + 0.3 * rng.random(layer.magnitude.shape)
    export_method_peft(tiny, tmp_path)
    hf = peft.PeftModel.from_pretrained(load_hf(), tmp_path).eval()
    with tinylora.no_grad():
        ours = tiny(tinylora.tensor(IDX))[0].numpy()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(IDX)).logits.numpy()
    with torch.no_grad():
        plain = load_hf()(input_ids=torch.tensor(IDX)).logits.numpy()
    assert np.abs(ours - plain).max() > 1e-2  # the adapter matters
    assert_close(theirs, ours, rtol=0, atol=ATOL, what=f"{kind} exported to PEFT")


def test_export_method_peft_refuses_what_peft_cannot_carry(ref, tmp_path):
    from tinylora.methods.adalora import apply_adalora
    from tinylora.methods.peft_export import export_method_peft
    from tinylora.methods.pissa import apply_pissa

    with pytest.raises(ValueError, match="pissa_to_lora"):
        export_method_peft(apply_pissa(load_gpt2(ref[3]), r=2), tmp_path)
    with pytest.raises(ValueError, match="AdaLoRALinear"):
        export_method_peft(apply_adalora(load_gpt2(ref[3]), init_r=2), tmp_path)
