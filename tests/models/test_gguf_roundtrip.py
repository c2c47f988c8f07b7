"""A .gguf reference is converted once to a cached folder and loads with matching logits."""

import numpy as np
import torch

from tuneforge.models import load_model


def _write_llama_gguf(model, tokenizer, path):
    """Write a tiny Llama as an f32 GGUF file with the gguf package (test-side writer)."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_tokenizer_model("gpt2")
    vocab = tokenizer.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in tokenizer.all_special_tokens else 1 for t in tokens])
    merges = tokenizer.backend_tokenizer.model.__getstate__()
    import json

    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads

    def permute(w, n_head):
        # llama.cpp stores q/k rows interleaved for its rotary layout; transformers undoes this.
        return (
            w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape)
        )

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    for i in range(cfg.num_hidden_layers):
        p, g = f"model.layers.{i}.", f"blk.{i}."
        names.update(
            {
                p + "self_attn.q_proj.weight": g + "attn_q.weight",
                p + "self_attn.k_proj.weight": g + "attn_k.weight",
                p + "self_attn.v_proj.weight": g + "attn_v.weight",
                p + "self_attn.o_proj.weight": g + "attn_output.weight",
                p + "mlp.gate_proj.weight": g + "ffn_gate.weight",
                p + "mlp.up_proj.weight": g + "ffn_up.weight",
                p + "mlp.down_proj.weight": g + "ffn_down.weight",
                p + "input_layernorm.weight": g + "attn_norm.weight",
                p + "post_attention_layernorm.weight": g + "ffn_norm.weight",
            }
        )
    for name, tensor in model.state_dict().items():
        if name not in names:
            continue
        array = tensor.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            array = permute(array, heads)
        elif name.endswith("k_proj.weight"):
            array = permute(array, kv_heads)
        writer.add_tensor(names[name], np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_file_converts_and_matches(tiny_model_dir, tmp_path, isolated_home):
    source = load_model(str(tiny_model_dir), device="cpu")
    path = tmp_path / "tiny.gguf"
    _write_llama_gguf(source.model, source.tokenizer, path)
    converted = load_model(str(path), device="cpu", progress=False)
    assert (isolated_home / "models" / "gguf").exists()
    ids = torch.tensor([source.tokenizer("The capital of France is Paris.")["input_ids"]])
    with torch.no_grad():
        expected = source.model(ids).logits
        actual = converted.model(ids).logits
    assert torch.allclose(expected, actual, atol=1e-4)
    assert converted.tokenizer.chat_template
