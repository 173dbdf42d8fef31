"""`model=<folder>`: a saved or downloaded model folder picks the model config of its architecture for the task,
and a folder it cannot take is one line."""
import json

import pytest

from nlpexp.errors import UserError


def test_model_folder_picks_the_config_of_its_architecture(tmp_path):
    from nlpexp import cli

    for kind, task, expected in (("gpt2", "story", "gpt2"), ("bert", "finsent", "bert"),
                                 ("bert", "chnsenti", "bert_chinese"), ("bert", "novel", "bert_fc")):
        folder = tmp_path / f"{kind}-{task}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": kind}))
        (folder / "model.safetensors").write_bytes(b"")
        assert cli._model_folders([f"task={task}", f"model={folder}", "seed=1"], []) == \
            [f"task={task}", f"model={expected}", f"model.pretrained={folder.resolve()}", "seed=1"]
    st = tmp_path / "st"
    st.mkdir()
    (st / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (st / "modules.json").write_text("[]")
    assert cli._model_folders(["task=embedding", f"model={st}"], [])[1] == "model=sentence_transformers"
    assert cli._model_folders(["model=minilm", "model=a,b"], []) == ["model=minilm", "model=a,b"]
    with pytest.raises(UserError, match="a bert model folder, and task=story takes none of"):
        cli._model_folders(["task=story", f"model={tmp_path / 'bert-finsent'}"], [])
    (tmp_path / "bert-finsent" / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"no \*.safetensors weights in it"):
        cli._model_folders([f"model={tmp_path / 'bert-finsent'}"], [])
    (tmp_path / "bert-finsent" / "config.json").write_text(json.dumps({"model_type": "bert", "auto_map": {
        "AutoModel": "modeling_evil.EvilModel"}}))
    with pytest.raises(UserError, match=r"code of its own \(auto_map\), which nlpexp never runs"):
        cli._model_folders([f"model={tmp_path / 'bert-finsent'}"], [])
