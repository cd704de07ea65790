"""Bad inputs fail with one line naming the file, line and key (exit 2, no traceback), and `generate`
keeps its results: the output folder is created first, results are appended as prompts finish, and
--resume continues a partial output."""

import json

import pytest

from openmimo.cli import main
from openmimo.config import ConfigError, load
from openmimo.jsonl import read_jsonl
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.runtime import init_runtime
from openmimo.tokenizer import train_tokenizer
from openmimo.train.config import PretrainConfig


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = train_tokenizer(["the cat sat on the mat", "two plus two is four"] * 20, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     num_nextn_predict_layers=0, initializer_range=0.3)
    path = tmp_path_factory.mktemp("ckpt")
    build_model(cfg, seed=0).save_pretrained(path, tokenizer=tok)
    return path


def gen(ckpt, *extra):
    return main(["generate", "--model", str(ckpt), "--max-new-tokens", "3", "--temperature", "0", "--no-progress",
                 *map(str, extra)])


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def write_prompts(path, n=3):
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": "the cat" if i % 2 else "two plus"}) + "\n"
                            for i in range(n)))


def test_output_folder_is_created_and_resume_skips_done_prompts(ckpt, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    write_prompts(inp)
    out = tmp_path / "new" / "deeper" / "out.jsonl"
    assert gen(ckpt, "--input", inp, "--output", out) == 0
    full = out.read_text().splitlines()
    assert [json.loads(line)["id"] for line in full] == ["p0", "p1", "p2"]
    capsys.readouterr()
    assert gen(ckpt, "--input", inp, "--output", out) == 2  # results there: refused without a flag
    one_line_error(capsys, str(out), "--resume", "--overwrite")
    out.write_text(full[0] + "\n" + full[1][:20])  # an interrupted run: p0 written, p1 cut off mid-line
    assert gen(ckpt, "--input", inp, "--output", out, "--resume") == 0
    assert "1 of 3 prompts are already in" in capsys.readouterr().err
    resumed = out.read_text().splitlines()
    assert resumed[0] == full[0]  # p0 kept as written
    same_results(resumed, full)  # p1 and p2 generated again (greedy: the same tokens)
    assert gen(ckpt, "--input", inp, "--output", out, "--overwrite") == 0
    same_results(out.read_text().splitlines(), full)


def same_results(lines: list[str], want: list[str]) -> None:
    """The same records, token for token; log-probs equal up to float rounding (a batch of another size takes
    another reduction order on some CPU kernel paths)."""
    got, exp = [json.loads(x) for x in lines], [json.loads(x) for x in want]
    assert [{k: v for k, v in r.items() if k != "logprobs"} for r in got] == \
        [{k: v for k, v in r.items() if k != "logprobs"} for r in exp]
    for a, b in zip(got, exp):
        assert len(a["logprobs"]) == len(b["logprobs"])
        assert all(abs(x - y) <= 1e-5 for x, y in zip(a["logprobs"], b["logprobs"]))


def test_unwritable_output_fails_before_generating(ckpt, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    write_prompts(inp)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert gen(ckpt, "--input", inp, "--output", blocker / "out.jsonl") == 2
    one_line_error(capsys, str(blocker / "out.jsonl"), "cannot write")


def test_resume_refuses_another_runs_output(ckpt, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    write_prompts(inp)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "other", "index": 0, "text": ""}) + "\n")
    assert gen(ckpt, "--input", inp, "--output", out, "--resume") == 2
    one_line_error(capsys, f"{out}:1", "'other'")


@pytest.mark.parametrize("record, needles", [
    ({"prompt": "the cat", "stop_ids": 5}, [":2:", "'stop_ids'"]),
    ({"messages": ["hello"]}, [":2:", "'messages'"]),
    ({"messages": [{"role": "user", "content": 5}]}, [":2:", "'messages'"]),
    ({"prompt": 7}, [":2:", "'prompt'"]),
    ({"prompt": "x", "temperature": float("nan")}, [":2:", "'temperature'"]),
    ({"prompt": "x", "n": 1.5}, [":2:", "'n'"]),
    ({"prompt_ids": [1, True]}, [":2:", "'prompt_ids'"]),
])
def test_bad_generate_records_name_file_line_and_key(ckpt, tmp_path, capsys, record, needles):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps(record) + "\n")
    assert gen(ckpt, "--input", inp) == 2
    one_line_error(capsys, str(inp), *needles)


def test_nan_sampling_flag_is_a_usage_error(ckpt, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    write_prompts(inp, 1)
    assert gen(ckpt, "--input", inp, "--top-p", "nan") == 2
    one_line_error(capsys, "top_p")


def test_non_utf8_jsonl_names_file_and_line(ckpt, tmp_path, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: not valid UTF-8 \(byte 32"):
        read_jsonl(p)
    assert gen(ckpt, "--input", p) == 2
    one_line_error(capsys, f"{p}:2", "UTF-8")


def test_non_utf8_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"train:\n  seed: 1\n  out_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: not valid UTF-8"):
        load(PretrainConfig, p)


@pytest.mark.parametrize("edit, needles", [
    (lambda d: {**d, "hidden_size": "64"}, ["config.json", "'hidden_size'", "integer"]),
    (lambda d: [d], ["config.json", "JSON object"]),
    (lambda d: {**d, "max_position_embeddings": 1e12}, ["config.json", "'max_position_embeddings'", "maximum"]),
])
def test_bad_config_json_names_file_and_key(ckpt, tmp_path, capsys, edit, needles):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(ckpt, folder)
    cfg = folder / "config.json"
    cfg.write_text(json.dumps(edit(json.loads(cfg.read_text()))))
    with pytest.raises(ValueError) as e:
        MiMoConfig.from_file(cfg)
    assert all(n in str(e.value) for n in needles), str(e.value)
    inp = tmp_path / "in.jsonl"
    write_prompts(inp, 1)
    assert gen(folder, "--input", inp) == 2
    one_line_error(capsys, *needles)


def test_huge_context_is_refused_with_a_bound():
    with pytest.raises(ConfigError, match=r"max_position_embeddings.*exceeds the supported maximum 16777216"):
        load(PretrainConfig, None, ["model.max_position_embeddings=1e12"])


def test_unknown_device_is_a_config_error_naming_the_key(ckpt, tmp_path, capsys):
    cfg = load(PretrainConfig, None, ["train.device=tpu"])
    with pytest.raises(ConfigError, match=r"key 'train\.device': unknown device 'tpu'"):
        init_runtime(cfg.train.device, cfg.train.dtype)
    with pytest.raises(ConfigError, match=r"key 'train\.device'"):
        init_runtime("cuda:x")
    assert main(["pretrain", "train.device=tpu", f"train.out_dir={tmp_path / 'run'}"]) == 2
    one_line_error(capsys, "train.device", "tpu")
    inp = tmp_path / "in.jsonl"
    write_prompts(inp, 1)
    assert gen(ckpt, "--input", inp, "--device", "tpu") == 2
    one_line_error(capsys, "--device", "tpu")
