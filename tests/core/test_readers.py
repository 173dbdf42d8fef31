"""nlpexp.inputs.readers, the one set of readers every wing reads through: non-UTF-8 files read as latin-1 with a note,
binary files, empty files and folders refused in one line, before the run where the CLI can."""
import pytest
from omegaconf import OmegaConf

from nlpexp.errors import UserError
from nlpexp.inputs.readers import read_labelled_file, read_text

FINSENT = ["negative", "neutral", "positive"]
WORDS = {"negative": "fell", "neutral": "was reported", "positive": "rose"}


def finsent_rows(per_label=10, label_of=lambda name: name):
    return [(f"Item {i} of {name} sales {WORDS[name]}", label_of(name)) for name in FINSENT for i in range(per_label)]


# -- (b) non-UTF-8 files --------------------------------------------------------------------------------------
def test_latin1_csv_is_read_as_latin1_with_a_note_never_replacement_characters(tmp_path, capsys):
    rows = finsent_rows()
    rows[0] = ("Café Nordbrew sales rose", "positive")
    path = tmp_path / "latin.csv"
    path.write_bytes(("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)).encode("latin-1"))
    frame = read_labelled_file(path)
    assert frame["text"][0] == "Café Nordbrew sales rose" and not frame["text"].str.contains("\ufffd").any()
    assert f"nlpexp: note: {path} is not UTF-8; read as latin-1" in capsys.readouterr().err


def test_utf8_bom_csv_finds_its_text_column(tmp_path, capsys):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "text,label\nGewinn in Malmö stieg,positive\n".encode("utf-8"))
    assert read_labelled_file(path)["text"].tolist() == ["Gewinn in Malmö stieg"]
    assert "note" not in capsys.readouterr().err


def latin1(path, text):
    path.write_bytes(text.encode("latin-1"))
    return path


def test_every_wing_reads_latin1_through_the_one_helper(tmp_path, capsys):
    from nlpexp.tasks.embedding.data import read_pairs
    from nlpexp.tasks.novel.data import read_sources
    from nlpexp.tasks.story.data import read_stories

    novel = latin1(tmp_path / "novel.txt", "Il était une fois à Genève.\n")
    assert read_sources(OmegaConf.create({"path": str(novel)}))[0].strip() == "Il était une fois à Genève."
    head = "storyid,storytitle,sentence1,sentence2,sentence3,sentence4,sentence5\n"
    story = latin1(tmp_path / "stories.csv", head + "s1,Café,Zoë went out.,b,c,d,e\n")
    frame, _, _ = read_stories(OmegaConf.create({"path": str(story)}))
    assert frame["prompt"].tolist() == ["Zoë went out."]
    pairs = latin1(tmp_path / "pairs.csv", "text_1,text_2,label\nA café.,Ein Café.,1\nNo.,Sí.,-1\n")
    read = read_pairs(OmegaConf.create({"path": str(pairs), "format": "auto"}), seed=0)
    assert read["text_2"].tolist() == ["Ein Café.", "Sí."]
    err = capsys.readouterr().err
    assert all(f"{p} is not UTF-8; read as latin-1" in err for p in (novel, story, pairs))


# -- (e) nonsense refused -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"PK\x03\x04\x14\x00\x00\x00\x08\x00" * 50,
                                     bytes(range(1, 256)) * 40])  # NUL bytes; or mostly control characters
def test_binary_files_are_refused_by_every_reader(tmp_path, content):
    from nlpexp.tasks.novel.data import read_sources

    for name in ("data.csv", "data.txt", "data.jsonl"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=f"{name} looks binary, not text"):
            read_labelled_file(tmp_path / name)
    with pytest.raises(UserError, match="data.txt looks binary, not text"):
        read_sources(OmegaConf.create({"path": str(tmp_path / "data.txt")}))


def test_text_with_a_few_control_characters_is_still_text(tmp_path):
    (tmp_path / "t.txt").write_bytes("Umsatz \x1b[1mstieg\x1b[0m in Zürich.\n".encode("utf-8") * 200)
    assert "Zürich" in read_text(tmp_path / "t.txt")


def test_empty_files_and_missing_text_columns_name_the_columns_found(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty.csv is empty"):
        read_labelled_file(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("headline,tone\n")
    with pytest.raises(UserError, match=r"header.csv: no data rows \(columns: headline, tone\)"):
        read_labelled_file(tmp_path / "header.csv")
    (tmp_path / "cols.csv").write_text("headline,tone\nSales rose,positive\n")
    with pytest.raises(UserError, match=r"cannot tell which column is the label \(headline, tone all could be; "
                                         r"columns: headline, tone\); set data.label_column=<name>"):
        read_labelled_file(tmp_path / "cols.csv")


def test_a_folder_for_a_file_is_refused_before_the_run(nlpexp, tmp_path):
    (tmp_path / "news").mkdir()
    res = nlpexp(f"data.path={tmp_path / 'news'}", "dry_run=true")
    assert res.code == 2 and "news is a folder, not a file" in res.err and not res.run_dirs()
    with pytest.raises(UserError, match="news is a folder, not a file"):
        read_labelled_file(tmp_path / "news")


def test_binary_data_and_input_are_refused_before_the_run(nlpexp, tmp_path):
    blob = tmp_path / "blob.txt"
    blob.write_bytes(b"\x00\x01\x02" * 100)
    res = nlpexp("task=novel", "model=transformer", f"data.path={blob}", "dry_run=true")
    assert res.code == 2 and "blob.txt looks binary, not text" in res.err and not res.run_dirs()
    res = nlpexp("mode=predict", f"ckpt={tmp_path / 'run'}", f"input={blob}")
    assert res.code == 2 and "blob.txt looks binary, not text" in res.err
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch1.txt").write_text("第一回 风起。天下大势，分久必合。\n" * 50, encoding="utf-8")
    book = nlpexp("task=novel", "model=transformer", f"data.path={tmp_path / 'book'}", "dry_run=true")
    assert book.code == 0, book.err  # task=novel reads folders
