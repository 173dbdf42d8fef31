import pytest

from nlpexp.tasks.classify.data import encode_labels, load_splits, stratified_split
from nlpexp.inputs.readers import read_labelled_file, read_phrasebank, resource_path
from nlpexp.errors import UserError


def test_latin1_file_and_at_sign_inside_sentence(tmp_path):
    path = tmp_path / "Sentences_AllAgree.txt"
    path.write_bytes("Café chain Nordbrew sold 3 outlets @ EUR 2 mn each .@positive\n"
                     "The report is due in May .@neutral\n".encode("latin-1"))
    frame = read_phrasebank(path)
    assert list(frame["text"]) == ["Café chain Nordbrew sold 3 outlets @ EUR 2 mn each .", "The report is due in May ."]
    assert list(frame["label"]) == ["positive", "neutral"]


def test_utf8_bom_and_crlf(tmp_path):
    path = tmp_path / "Sentences_50Agree.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "Profit fell in Malmö .@negative\r\nSales rose .@positive\r\n".encode("utf-8"))
    frame = read_phrasebank(path)
    assert list(frame["text"]) == ["Profit fell in Malmö .", "Sales rose ."]
    assert list(frame["label"]) == ["negative", "positive"]


def test_malformed_line_is_named(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Fine line .@neutral\nno separator here\n")
    with pytest.raises(UserError, match=r"bad.txt line 2"):
        read_phrasebank(path)


def test_unknown_label_is_named(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("Up .@positive\nDown .@bearish\n")
    with pytest.raises(UserError, match=r"line 2: unknown label 'bearish'"):
        encode_labels(read_phrasebank(path), ["negative", "neutral", "positive"], str(path))


def test_csv_with_custom_columns(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text('headline,tone\n"Sales rose, again",positive\nProfit fell,negative\n')
    frame = read_labelled_file(path, "auto", "headline", "tone")
    assert list(frame["text"]) == ["Sales rose, again", "Profit fell"]
    with pytest.raises(UserError, match=r"no column 'title' for data.text_column \(columns: headline, tone\)"):
        read_labelled_file(path, "auto", "title", "tone")


def test_embedded_sample_split_is_stratified_seeded_64_16_20():
    labels = ["negative", "neutral", "positive"]
    frame = encode_labels(read_labelled_file(resource_path("finsent.csv")), labels, "embedded")
    assert len(frame) >= 300 and frame["text"].is_unique
    a = stratified_split(frame, [0.64, 0.16, 0.2], seed=1)
    b = stratified_split(frame, [0.64, 0.16, 0.2], seed=1)
    assert [len(a[s]) for s in a] == [307, 77, 96]
    assert all(a[s]["text"].tolist() == b[s]["text"].tolist() for s in a)
    assert not set(a["train"]["text"]) & set(a["test"]["text"])
    shares = a["test"]["label"].value_counts(normalize=True)
    assert shares.max() - shares.min() < 0.02


def test_empty_split_is_refused(tmp_path):
    from omegaconf import OmegaConf

    path = tmp_path / "tiny.csv"
    path.write_text("text,label\n" + "".join(f"t{i},positive\n" for i in range(2)))
    data = OmegaConf.create({"path": str(path), "format": "auto", "text_column": None, "label_column": None,
                             "split": [0.5, 0.25, 0.25], "source": "file"})
    with pytest.raises(UserError):
        load_splits(data, ["negative", "neutral", "positive"], seed=0)
