"""benchmarks/flop_utilisation.py on the tiny dataset: every model gets counted FLOPs, rates and utilisation."""

from __future__ import annotations

from helpers import load_script


def test_flop_utilisation_reports_every_model(tiny_data, capsys):
    script = load_script("flop_utilisation")
    assert script.main(["--data", str(tiny_data), "--models", "din,loopctr", "--batch-size", "32", "--batches", "2",
                        "--repeats", "1", "loopctr:d_model=16", "loopctr:n_heads=2", "loopctr:ffn_hidden=16"]) == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| din") or line.startswith("| loop")}
    assert set(rows) == {"din", "loopctr"}
    din, loop = rows["din"], rows["loopctr"]
    assert float(din[0]) > float(din[2]) > 0 and din[1] == "-"  # training counts the backward too; DIN is jagged
    assert float(loop[1]) >= float(loop[0]) > 0  # padding every row to the longest costs at least as much
    assert all(cell.endswith("%") and float(cell[:-1]) > 0 for cell in (loop[5], loop[7]))


def test_cpu_attention_is_counted():
    """torch's counter alone counts F.scaled_dot_product_attention on CPU as 0 FLOPs."""
    import torch
    import torch.nn.functional as F

    from loopctr.scaling.flops import counting

    q = torch.randn(3, 2, 20, 8, requires_grad=True)
    mask = torch.rand(3, 1, 20, 20) > 0.3
    with counting() as counter:
        F.scaled_dot_product_attention(q, q, q, attn_mask=mask).sum().backward()
    forward = 3 * 2 * 20 * 20 * 8 * 4  # QK^T and AV, 2 FLOPs a multiply-add
    assert counter.get_total_flops() == forward + int(2.5 * forward)
