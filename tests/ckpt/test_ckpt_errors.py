"""Strictness: every unexpected, missing or misshapen tensor and every bad path is a CheckpointError."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from jaxenc.ckpt import load_llama, load_whisper_encoder
from jaxenc.errors import CheckpointError


def edited_copy(src, dst, edit):
    """Copy the single-file checkpoint ``src`` to ``dst`` with ``edit(tensors)`` applied; return dst."""
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_unexpected_key_is_named(llama_dirs, whisper_dirs, tmp_path):
    _, dirs = llama_dirs
    path = edited_copy(dirs["single"], tmp_path / "llama", lambda t: t.update({"model.layers.0.foo": torch.ones(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected key 'model\.layers\.0\.foo'") as err:
        load_llama(path)
    assert err.value.path == str(path / "model.safetensors")
    _, dirs = whisper_dirs
    path = edited_copy(dirs["single"], tmp_path / "whisper", lambda t: t.update({"model.encoder.foo": torch.ones(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected key 'model\.encoder\.foo'"):
        load_whisper_encoder(path)


def test_layer_beyond_the_config_is_unexpected(llama_dirs, tmp_path):
    _, dirs = llama_dirs
    path = edited_copy(dirs["single"], tmp_path / "c", lambda t: t.update(
        {"model.layers.3.input_layernorm.weight": torch.ones(32)}))
    with pytest.raises(CheckpointError, match=r"unexpected key 'model\.layers\.3\.input_layernorm\.weight'"):
        load_llama(path, max_layer=1)


def test_missing_key_is_named(llama_dirs, whisper_dirs, tmp_path):
    _, dirs = llama_dirs
    path = edited_copy(dirs["single"], tmp_path / "llama", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing key 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        load_llama(path)
    _, dirs = whisper_dirs
    path = edited_copy(dirs["single"], tmp_path / "whisper", lambda t: t.pop("model.encoder.layer_norm.bias"))
    with pytest.raises(CheckpointError, match=r"missing key 'model\.encoder\.layer_norm\.bias'"):
        load_whisper_encoder(path)


def test_shape_mismatch_is_named(llama_dirs, whisper_dirs, tmp_path):
    _, dirs = llama_dirs
    path = edited_copy(dirs["single"], tmp_path / "llama", lambda t: t.update({"model.norm.weight": torch.ones(33)}))
    with pytest.raises(CheckpointError, match=r"key 'model\.norm\.weight' has shape \(33,\), expected \(32,\)"):
        load_llama(path)
    _, dirs = whisper_dirs
    # A conv kernel stored in flax's layout instead of torch's must not slip through.
    path = edited_copy(dirs["single"], tmp_path / "whisper", lambda t: t.update(
        {"model.encoder.conv1.weight": t["model.encoder.conv1.weight"].permute(2, 1, 0).contiguous()}))
    with pytest.raises(CheckpointError, match=r"key 'model\.encoder\.conv1\.weight' has shape \(3, 80, 32\)"):
        load_whisper_encoder(path)


def test_integer_tensor_is_refused(llama_dirs, tmp_path):
    _, dirs = llama_dirs
    path = edited_copy(dirs["single"], tmp_path / "c", lambda t: t.update(
        {"model.norm.weight": torch.ones(32, dtype=torch.int32)}))
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' has dtype int32"):
        load_llama(path)


def test_layers_past_max_layer_are_not_read(llama_dirs, tmp_path):
    _, dirs = llama_dirs

    def break_last_layer(tensors):
        for key in [k for k in tensors if k.startswith(("model.layers.2.", "model.norm."))]:
            tensors[key] = torch.ones(1)

    path = edited_copy(dirs["single"], tmp_path / "c", break_last_layer)
    model, config = load_llama(path, max_layer=2)
    assert len(model.layers) == 2 and config.num_hidden_layers == 3
    with pytest.raises(CheckpointError, match=r"model\.(layers\.2\.|norm\.)"):
        load_llama(path)
    with pytest.raises(CheckpointError, match="max_layer=4"):
        load_llama(path, max_layer=4)


def test_index_naming_an_absent_tensor(llama_dirs, tmp_path):
    _, dirs = llama_dirs
    path = shutil.copytree(dirs["sharded"], tmp_path / "c")
    index = path / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"]["model.layers.0.extra"] = next(iter(doc["weight_map"].values()))
    index.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.extra' is listed but not stored"):
        load_llama(path)


def test_bad_paths_and_ids(llama_dirs, tmp_path):
    _, dirs = llama_dirs
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_llama(tmp_path / "does-not-exist")
    # Hub ids are looked up in the local cache only (download=False): no network is touched.
    with pytest.raises(CheckpointError, match="not found in the local Hugging Face cache"):
        load_llama("jaxenc-tests/no-such-model")
    with pytest.raises(CheckpointError, match="model_type is 'llama', expected 'whisper'"):
        load_whisper_encoder(dirs["single"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_llama(tmp_path / "empty")
    shutil.copy(dirs["single"] / "config.json", tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no weights found"):
        load_llama(tmp_path / "empty")


class _NotATensor:
    """A pickled object that torch.load(weights_only=True) must refuse."""


def _code_that_must_not_run(folder, marker):
    """Python beside the checkpoint that leaves ``marker`` behind if it is ever imported."""
    (folder / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (folder / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")


def test_a_checkpoint_folder_asking_to_run_its_code_is_refused_naming_the_file(llama_dirs, tmp_path):
    from jaxenc.ckpt import load_tokenizer
    from jaxenc.features.defaults import write_default_llama

    folder = write_default_llama(tmp_path / "llama", "once upon a time".split(), hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, intermediate_size=32)
    assert load_tokenizer(folder)("once upon").input_ids  # the plain folder loads
    marker = tmp_path / "code-ran"
    _code_that_must_not_run(folder, marker)
    tokenizer_config = folder / "tokenizer_config.json"
    content = json.loads(tokenizer_config.read_text())
    content["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    tokenizer_config.write_text(json.dumps(content))
    with pytest.raises(CheckpointError) as err:
        load_tokenizer(folder)
    message = str(err.value)
    assert "\n" not in message and err.value.path == str(tokenizer_config)
    assert f"the checkpoint folder {folder} asks to run its own Python code" in message
    assert '"auto_map" in tokenizer_config.json' in message

    # The same in config.json stops the model loaders before transformers reads it.
    _, dirs = llama_dirs
    model = tmp_path / "model"
    shutil.copytree(dirs["single"], model)
    _code_that_must_not_run(model, marker)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r'asks to run its own Python code \("auto_map" in config.json\)'):
        load_llama(model)
    assert not marker.exists()


def test_a_pickle_holding_more_than_tensors_is_refused_in_one_line(llama_dirs, tmp_path):
    _, dirs = llama_dirs
    path = tmp_path / "llama"
    shutil.copytree(dirs["bin"], path)
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    state["extra"] = _NotATensor()
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        load_llama(path)
    message = str(err.value)
    assert "\n" not in message and err.value.path == str(path / "pytorch_model.bin")
    assert "the pickle holds more than tensors, which jaxenc never unpickles (torch.load with weights_only=True: " \
           "Unsupported global: GLOBAL tests.ckpt.test_ckpt_errors._NotATensor was not an allowed global by " \
           "default)" in message
