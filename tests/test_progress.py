"""Progress output: plain lines where output is not a terminal (one per epoch, and one every N seconds inside
long epochs), a bar naming the current epoch in a terminal."""

import io

import torch

from ssl_emp.progress import Progress, clock


def test_output_that_is_not_a_terminal_gets_lines_with_timing_inside_long_epochs_too():
    out = io.StringIO()  # not a terminal: "auto" means lines
    progress = Progress("epoch", 2, 40, stream=out, every_seconds=0)  # every step is "long enough ago"
    for epoch in (1, 2):
        progress.start(epoch, 4)
        for step in range(1, 5):
            progress.step(step, 5, torch.tensor(float(step)))
        progress.line(f"epoch {epoch}/2  loss 9.0000")
    lines = out.getvalue().splitlines()
    # Steps 1-3 of each epoch get a line; the last step's is the epoch's own line.
    assert [line.split("  ")[:2] for line in lines] == [
        ["epoch 1/2", "step 1/4"],
        ["epoch 1/2", "step 2/4"],
        ["epoch 1/2", "step 3/4"],
        ["epoch 1/2", "loss 9.0000"],
        ["epoch 2/2", "step 1/4"],
        ["epoch 2/2", "step 2/4"],
        ["epoch 2/2", "step 3/4"],
        ["epoch 2/2", "loss 9.0000"],
    ]
    assert "loss 2.0000" in lines[1] and all(" elapsed " in line and " eta " in line for line in lines)
    assert lines[-1].endswith("eta 0:00:00")  # all 40 items done


def test_a_bar_names_the_epoch_being_trained_not_the_last_logged_one():
    progress = Progress("epoch", 3, 30, mode="bar", stream=io.StringIO())
    progress.start(1, 2)
    progress.step(1, 5, postfix={"loss": "1.0"})
    progress.start(2, 2)
    assert progress.bar.desc.startswith("epoch 2/3")
    progress.close()


def test_silence_prints_nothing_and_clock_reads_hours_minutes_seconds():
    out = io.StringIO()
    progress = Progress("epoch", 1, 10, mode="off", stream=out, every_seconds=0)
    progress.start(1, 2)
    progress.step(1, 5)
    progress.line("epoch 1/1", always=True)
    progress.write("a note")
    assert out.getvalue() == ""
    assert clock(3725.9) == "1:02:05" and clock(float("nan")) == "-:--:--"
