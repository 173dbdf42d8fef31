"""bert2bert on task=story: transformers' EncoderDecoderModel with the encoder and the decoder both initialised
from one pretrained BERT; the decoder's cross-attention is new (Rothe, Narayan & Severyn 2020, "Leveraging
Pre-trained Checkpoints for Sequence Generation Tasks"). The encoder reads `[CLS] first sentence [SEP]`, the
decoder writes the rest from `[CLS]` to `[SEP]` (teacher-forced, shifted right), generating through transformers'
`generate` under nlpexp.training.decoding's processors, the controls every story model uses.

The weights the checkpoint lacks (the cross-attention, and the LM head's transform where the BERT has no MLM head,
as MiniLM) train at trainer.lr x model.new_lr_scale (`lr_scales`, training.loop.scaled_adamw), the rest at trainer.lr.

The BERT's WordPiece vocabulary is kept. An uncased BERT (the packaged all-MiniLM-L6-v2) writes lower case: the
text is then given sentence capitals, `I`, and the prompt's capitalised words back (nlpexp.training.decoding.recase),
since BLEU compares case. model.pretrained=null (and +smoke=true): both sides small from `model.small` over a
WordPiece trained on the stories.
"""
from pathlib import Path

from torch import nn

from nlpexp.inputs.hub import builds_small, pretrained_model, pretrained_tokenizer, small_bert_config, train_wordpiece
from nlpexp.runs import loading, write_dir
from nlpexp.tasks.story.contract import Built, batches_in_order, write_spec


class StoryBert2Bert(nn.Module):
    objective = "encdec"

    def __init__(self, lm, tokenizer):
        super().__init__()
        self.lm, self.tokenizer = lm, tokenizer
        self.pad_id, self.eos_id = tokenizer.pad_token_id, tokenizer.sep_token_id
        self.start_id = tokenizer.cls_token_id
        self.max_len = int(lm.config.decoder.max_position_embeddings)
        self.banned = [i for i in tokenizer.all_special_ids if i != self.eos_id]
        for config in (lm.config, lm.generation_config):
            config.decoder_start_token_id, config.pad_token_id = self.start_id, self.pad_id
            config.eos_token_id = self.eos_id

    def examples(self, pairs, train: bool):
        """Source `[CLS] prompt [SEP]`, target `continuation [SEP]`: every target token is scored."""
        room = self.max_len - 2
        return [{"src": [self.start_id] + p[:room] + [self.eos_id], "tgt": t[:self.max_len - 1] + [self.eos_id]}
                for p, t in pairs]

    def collate(self, items):
        import torch

        n, src_w, tgt_w = len(items), max(len(it["src"]) for it in items), max(len(it["tgt"]) for it in items)
        src = torch.full((n, src_w), self.pad_id, dtype=torch.long)
        dec = torch.full((n, tgt_w), self.pad_id, dtype=torch.long)
        labels = torch.full((n, tgt_w), -100, dtype=torch.long)
        for r, it in enumerate(items):
            src[r, :len(it["src"])] = torch.tensor(it["src"])
            tgt = torch.tensor(it["tgt"])
            dec[r, 0], dec[r, 1:len(tgt)] = self.start_id, tgt[:-1]
            labels[r, :len(tgt)] = tgt
        return {"ids": src, "attention_mask": (src != self.pad_id).long(), "decoder_ids": dec,
                "decoder_attention_mask": (labels != -100).long(), "labels": labels}

    def scores(self, batch):
        return self.lm(input_ids=batch["ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_ids"], decoder_attention_mask=batch["decoder_attention_mask"],
                       use_cache=False).logits, batch["labels"]

    def prompt_groups(self, prompts, batch_size: int):
        return batches_in_order(prompts, batch_size)  # padded under the encoder's attention mask

    def fit_positions(self, rows, max_new: int):
        return [[self.start_id] + r[:self.max_len - 2] + [self.eos_id] for r in rows], min(max_new, self.max_len - 1)

    def continue_ids(self, rows, max_new: int, settings: dict, *, sentence_ids, words, eos_id: int, seed: int,
                     generator):
        """transformers' generate (encoder once, decoder cache) under nlpexp.training.decoding's processors."""
        from nlpexp.training import decoding

        return decoding.hf_generate(self.lm, rows, max_new, **decoding.controls(settings), pad_id=self.pad_id,
                                    eos_id=self.eos_id, banned_ids=self.banned, sentence_ids=sentence_ids,
                                    max_sentences=settings["max_sentences"], words=words, seed=seed,
                                    encoder_decoder=True)

    def save(self, folder: Path, tokenizer=None) -> None:
        with write_dir(folder) as tmp:  # written whole or not at all
            self.lm.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            write_spec(tmp, "bert2bert", {})


def build(m, task, train_texts):
    """(tokenizer, StoryBert2Bert) warm-started from model.pretrained on both sides, or small from config.
    m: config.Bert2Bert; task: what m.task() names (a small-built one reads its positions)."""
    from transformers import BertConfig, BertLMHeadModel, BertModel, EncoderDecoderConfig, EncoderDecoderModel

    scales = {}
    if builds_small(m):  # +smoke=true too (story's smoke file, per_model): small on both sides, in seconds
        tok = train_wordpiece(train_texts, int(m.small.vocab_size))
        enc = small_bert_config(m.small, len(tok), tok.pad_token_id, int(task.max_len))
        dec = small_bert_config(m.small, len(tok), tok.pad_token_id, int(task.max_len), is_decoder=True,
                                add_cross_attention=True)
        lm = EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec))
    else:
        revision = m.revision
        tok = pretrained_tokenizer(m.pretrained, revision)
        encoder = pretrained_model(m.pretrained, BertModel, revision)  # with its pooler: loads back whole
        bert = BertConfig.from_dict({**encoder.config.to_dict(), "is_decoder": True, "add_cross_attention": True})
        decoder, info = pretrained_model(m.pretrained, BertLMHeadModel, revision, config=bert,
                                         output_loading_info=True)  # the cross-attention new
        lm = EncoderDecoderModel(encoder=encoder, decoder=decoder)
        new = {f"lm.decoder.{k}" for k in info["missing_keys"]}
        scales = {n: float(m.new_lr_scale) for n, _ in lm.named_parameters(prefix="lm") if n in new}
    if m.freeze_embeddings:  # both sides' word embeddings, and with them the decoder's tied output layer
        for side in (lm.encoder, lm.decoder.bert):
            side.embeddings.word_embeddings.weight.requires_grad_(False)
    return Built(tok, StoryBert2Bert(lm, tok), lr_scales=scales)


def load(folder: Path, device: str):
    import torch
    from transformers import AutoTokenizer, EncoderDecoderModel

    from nlpexp.tasks.story.contract import read_spec

    with loading(folder):
        read_spec(folder)  # a bert2bert folder (story_model.json)
        lm = EncoderDecoderModel.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(folder)
        return StoryBert2Bert(lm, tok).to(device).eval(), tok


def pretrained(m, device: str):
    from nlpexp.errors import UserError

    raise UserError("bert2bert's cross-attention is new and untrained: pass ckpt=<run folder> of a trained "
                    "task=story model=bert2bert run")
