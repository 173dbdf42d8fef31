"""GPT-2 on task=story: fine-tuned on `first sentence + rest + <|endoftext|>` (`trainer.epochs=0`: zero-shot),
generating through transformers' `generate` under the same controls as our models. Hub `gpt2` with its BPE, or
(model.pretrained=null) a small GPT-2 from `model.small` over a byte-level BPE trained on the stories."""
from pathlib import Path

from torch import nn

from nlpexp.hub import builds_small, pretrained_model, pretrained_tokenizer, small_gpt2_config, train_byte_bpe
from nlpexp.tasks.story.contract import batches_in_order, fit_decoder_positions, write_spec



def freeze_layers(lm, n: int) -> None:
    """Freeze the token and position embeddings and the first n blocks (0: train everything). GPT-2 ties its
    output layer to the token embeddings, so the output layer stays frozen with them."""
    if n <= 0:
        return
    for module in [lm.transformer.wte, lm.transformer.wpe, *lm.transformer.h[:n]]:
        for p in module.parameters():
            p.requires_grad_(False)


class StoryGPT2(nn.Module):
    objective = "causal_lm"

    def __init__(self, lm, tokenizer):
        super().__init__()
        self.lm, self.tokenizer = lm, tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.max_len = lm.config.n_positions

    def examples(self, pairs, train: bool):
        return [{"ids": (p + t + [self.eos_id])[: self.max_len], "first": 0 if train else len(p)} for p, t in pairs]

    def collate(self, items):
        import torch

        width = max(len(it["ids"]) for it in items)
        ids = torch.full((len(items), width), self.eos_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, it in enumerate(items):
            n = len(it["ids"])
            ids[r, :n] = torch.tensor(it["ids"])
            attn[r, :n] = 1
            # labels[t] = ids[t+1]: the token after position t, from the first scored one on
            labels[r, max(it["first"] - 1, 0):n - 1] = ids[r, max(it["first"], 1):n]
        return {"ids": ids, "attention_mask": attn, "labels": labels}

    def nll_sum(self, batch):
        logits = self.lm(input_ids=batch["ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch["labels"].reshape(-1),
                                           ignore_index=-100, reduction="sum")

    def prompt_groups(self, prompts, batch_size: int):
        return batches_in_order(prompts, batch_size)  # left-padded under an attention mask

    def fit_positions(self, rows, max_new: int):
        return fit_decoder_positions(rows, max_new, self.max_len)

    def continue_ids(self, rows, max_new: int, settings: dict, *, sentence_ids, words, eos_id: int, seed: int,
                     generator):
        return self.hf_generate(rows, max_new, sentence_ids=sentence_ids, words=words, seed=seed,
                                **{k: v for k, v in settings.items() if k != "max_new_tokens"})

    def hf_generate(self, prompts: list[list[int]], max_new_tokens: int, *, strategy="sample", temperature=1.0,
                    top_k=0, top_p=1.0, num_beams=4, repetition_penalty=1.0, no_repeat_ngram_size=0,
                    sentence_ids=(), max_sentences=0, seed=0, words=None, **_) -> list[list[int]]:
        """transformers' generate (with its key/value cache) under the same controls as nlpexp.decoding.generate."""
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        from nlpexp.decoding import ban_empty_sentences

        width = max(len(p) for p in prompts)
        device = next(self.lm.parameters()).device
        ids = torch.tensor([[self.eos_id] * (width - len(p)) + p for p in prompts], device=device)
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        ends = torch.zeros(len(self.tokenizer), dtype=torch.bool, device=device)
        ends[list(sentence_ids)] = True

        class SentencesDone(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                new = input_ids[:, width:]
                return ends[new].sum(dim=1) >= max_sentences if max_sentences else torch.zeros(
                    len(input_ids), dtype=torch.bool, device=input_ids.device)

        sentence_set, word_set = set(sentence_ids), set(words) if words is not None else None
        eos = self.eos_id

        class NoEmptySentence(LogitsProcessor):
            def __call__(self, input_ids, scores):
                ban_empty_sentences(scores, input_ids[:, width:].tolist(), sentence_set, word_set, eos)
                return scores

        kwargs = {"max_new_tokens": max_new_tokens, "logits_processor": LogitsProcessorList([NoEmptySentence()]),
                  "repetition_penalty": float(repetition_penalty),
                  "no_repeat_ngram_size": int(no_repeat_ngram_size), "eos_token_id": self.eos_id,
                  "pad_token_id": self.eos_id, "stopping_criteria": StoppingCriteriaList([SentencesDone()])}
        if strategy == "sample":
            kwargs.update(do_sample=True, temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
        else:
            kwargs.update(do_sample=False, num_beams=int(num_beams) if strategy == "beam" else 1,
                          temperature=None, top_k=None, top_p=None)
        torch.manual_seed(int(seed))
        with torch.no_grad():
            out = self.lm.generate(input_ids=ids, attention_mask=attn, **kwargs)[:, width:].tolist()
        return [row[: row.index(self.eos_id)] if self.eos_id in row else row for row in out]

    def save(self, folder: Path, tokenizer=None) -> None:
        self.lm.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        write_spec(folder, "gpt2", {})


def build(cfg, train_texts, smoke: bool = False):
    """(tokenizer, StoryGPT2): the hub model with its BPE, or a small GPT-2 over a BPE trained on the stories."""
    from transformers import GPT2LMHeadModel

    m = cfg.model
    if builds_small(m, smoke):
        tok = train_byte_bpe(train_texts, int(cfg.task.bpe_vocab_size))
        lm = GPT2LMHeadModel(small_gpt2_config(m.small, len(tok), int(cfg.task.max_len), tok.eos_token_id,
                                               tok.pad_token_id))
    else:
        tok = pretrained_tokenizer(m.pretrained)
        lm = pretrained_model(m.pretrained, GPT2LMHeadModel)
    freeze_layers(lm, int(m.freeze_layers))
    return tok, StoryGPT2(lm, tok)


def load(folder: Path, device: str):
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    lm = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
    model = StoryGPT2(lm, AutoTokenizer.from_pretrained(folder))
    return model.to(device).eval(), model.tokenizer


def pretrained(cfg, device: str):
    """The configured pretrained GPT-2 as it is (mode=generate without ckpt)."""
    from transformers import GPT2LMHeadModel

    from nlpexp.errors import UserError

    if not cfg.model.get("pretrained"):
        raise UserError("model.pretrained=null has no weights to generate with: pass ckpt=<run folder> of a trained "
                        "task=story run, or model.pretrained=<hub id or folder>")
    tok = pretrained_tokenizer(cfg.model.pretrained)
    model = StoryGPT2(pretrained_model(cfg.model.pretrained, GPT2LMHeadModel), tok)
    return model.to(device).eval(), tok
