"""The sinusoidal positional encoding on its own: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...),
drawn for task.positions (1 and 100) at d = task.d_model (500) into posenc.png, the values in posenc.csv."""
from pathlib import Path


def run(cfg, run_dir: Path, device: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from nlpexp.models.transformer import positional_encoding

    d, positions = int(cfg.task.d_model), [int(p) for p in cfg.task.positions]
    rows = positional_encoding(len(positions), d, at=positions)  # only the positions drawn
    pe = {p: rows[i] for i, p in enumerate(positions)}
    fig, ax = plt.subplots(figsize=(9, 4))
    for pos in positions:
        ax.plot(range(d), pe[pos].numpy(), label=f"position {pos}", lw=1)
    ax.set_xlabel("dimension")
    ax.set_ylabel("encoding")
    ax.set_title(f"sinusoidal positional encoding, d={d}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "posenc.png", dpi=110)
    plt.close(fig)
    pd.DataFrame({f"position_{p}": pe[p].numpy() for p in positions}).to_csv(run_dir / "posenc.csv",
                                                                            index_label="dimension")
    print(f"wrote {run_dir / 'posenc.png'}")
    metrics = {f"pos{p}_mean": round(float(pe[p].mean()), 5) for p in positions}
    return {"metrics": metrics, "objective": "", "plot": str(run_dir / "posenc.png")}
