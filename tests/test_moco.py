import pytest
import torch
from lightly.loss import NTXentLoss

from ssl_emp.build import build_method
from ssl_emp.config import load_pretrain_config
from ssl_emp.methods.losses import per_sample_infonce_with_stats
from ssl_emp.pruning import Pruner
from ssl_emp.pruning.scorers import MEMORY_FORMS


def _moco(queue_size=64, momentum=0.9):
    cfg = load_pretrain_config(
        "configs/moco_digits.yaml",
        [
            "model.width=8",
            "model.proj_hidden_dim=32",
            "model.proj_output_dim=16",
            f"method.queue_size={queue_size}",
            f"method.momentum={momentum}",
        ],
    )
    torch.manual_seed(0)
    return build_method(cfg, in_channels=1), cfg


@pytest.mark.kernels("our per-sample InfoNCE against lightly's, within float tolerance")
def test_per_sample_infonce_mean_matches_lightly_with_a_memory_bank():
    torch.manual_seed(0)
    q0, q1, k0, k1 = (torch.randn(6, 8) for _ in range(4))
    queue = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
    loss, entropy, positive_prob = per_sample_infonce_with_stats(q0, q1, k0, k1, queue, temperature=0.2)
    expected = []
    for query, key in ((q0, k1), (q1, k0)):
        criterion = NTXentLoss(temperature=0.2, memory_bank_size=(20, 8))
        criterion.memory_bank.bank.copy_(queue)  # lightly reads the bank before enqueuing the keys
        expected.append(criterion(query, key))
    assert loss.shape == entropy.shape == positive_prob.shape == (6,)
    assert loss.mean().item() == pytest.approx(0.5 * (expected[0] + expected[1]).item(), rel=1e-5)
    assert bool(((positive_prob > 0) & (positive_prob < 1)).all())
    assert bool((entropy > 0).all()) and bool((entropy <= torch.log(torch.tensor(21.0)) + 1e-5).all())


def test_moco_outputs_train_only_the_query_encoder_and_fill_the_queue():
    model, _ = _moco()
    x = torch.rand(8, 1, 8, 8)
    out = model(x, x.flip(-1))
    assert out.loss.shape == out.agreement.shape == (8,)
    out.training_loss().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.backbone_momentum.parameters())
    assert int(model.queue.pointer) == 16  # both views' keys were enqueued


def test_momentum_encoder_follows_the_query_encoder(assert_ema_step):
    model, _ = _moco(momentum=0.5)
    assert_ema_step(model, 0.5)


def test_queue_is_part_of_the_state_dict():
    model, cfg = _moco()
    model(torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8))
    state = model.state_dict()
    fresh = build_method(cfg, in_channels=1)
    assert not torch.equal(fresh.queue.keys, model.queue.keys)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue.keys, model.queue.keys) and int(fresh.queue.pointer) == 16


def test_queue_is_a_ring_that_overwrites_the_oldest_keys():
    from ssl_emp.methods.queue import KeyQueue

    queue = KeyQueue(5, 2)
    for start in (0, 3):  # 3 keys, then 3 more: the 6th wraps around onto slot 0
        queue.push(torch.arange(start, start + 3, dtype=torch.float32)[:, None].expand(3, 2))
    assert queue.keys[:, 0].tolist() == [5.0, 1.0, 2.0, 3.0, 4.0] and int(queue.pointer) == 1
    queue.push(torch.arange(10, 17, dtype=torch.float32)[:, None].expand(7, 2))  # more than fits: the last 5
    assert sorted(queue.keys[:, 0].tolist()) == [12.0, 13.0, 14.0, 15.0, 16.0]


def test_a_moco_step_reads_nothing_back_to_the_host(no_host_reads):
    """A host read (.item(), int(), bool()) in the forward pass or the enqueue would be a GPU sync every step."""
    model, _ = _moco()
    x0, x1 = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    with no_host_reads():
        out = model(x0, x1)
        out.training_loss().backward()
        model.on_step_end()
    assert int(model.queue.pointer) == 16


@pytest.mark.parametrize("memory", list(MEMORY_FORMS))
def test_every_emp_memory_form_scores_moco_outputs_on_a_revisit(memory):
    """MoCo's outputs carry everything each memory form reads. On a second visit every form is defined: the
    memory term is finite, tells the samples apart, and moves the scores away from those of the loss alone
    (the same steps scored with beta = 0)."""
    model, _ = _moco()
    indices = torch.arange(4, 12)
    outputs = [model(torch.rand(n, 1, 8, 8), torch.rand(n, 1, 8, 8)) for n in (8, 4, 4)]
    # All 8 samples at epoch 0, one half again at epoch 1, the other at epoch 3 (so recency differs too).
    steps = [(indices, outputs[0], 0), (indices[:4], outputs[1], 1), (indices[4:], outputs[2], 3)]
    pruners = {
        beta: Pruner(20, 4, scorer="emp", memory=memory, selector="eps_greedy", rate=0.3, beta=beta)
        for beta in (0.0, 1.0)
    }
    for pruner in pruners.values():
        for step_indices, stats, epoch in steps:
            pruner.observe(step_indices, stats, epoch=epoch)
    memory_term = pruners[1.0].scorer.memory_now(pruners[1.0].table, epoch=4)[indices]
    assert bool(torch.isfinite(memory_term).all()) and memory_term.std() > 0
    at_selection = {beta: p.scorer.selection_scores(p.table, epoch=4)[indices] for beta, p in pruners.items()}
    assert not torch.allclose(at_selection[1.0], at_selection[0.0], atol=1e-3)


def _shuffle_bn_worker(rank, world_size, port, shuffle_bn, out_dir):
    """One rank of a 2-process MoCo step: its shard of a 7-sample global batch (shards of 4 and 3)."""
    import os

    import torch.distributed as dist

    from ssl_emp.distributed import Shard, split_sizes

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    model, _ = _moco()  # seeded: the same weights on both ranks
    model.shuffle_bn = shuffle_bn
    model.train()
    views = torch.randn(2, 7, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    shard = Shard(split_sizes(7, world_size), rank)
    permutations = []
    original = Shard.shuffle

    def recording(self, x):
        drawn, permutation = original(self, x)
        permutations.append(permutation)
        return drawn, permutation

    Shard.shuffle = recording
    try:
        model(views[0][shard.local], views[1][shard.local], shard=shard)
    finally:
        Shard.shuffle = original
    torch.save(
        {"queue": model.queue.keys[:14].clone(), "permutations": permutations}, os.path.join(out_dir, f"rank{rank}.pt")
    )
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("shuffle_bn", [True, False])
def test_shuffled_batchnorm_encodes_keys_on_a_random_draw_of_the_global_batch(tmp_path, shuffle_bn):
    """With shuffle_bn each rank's key encoder sees a random draw of the 7 samples in its BN batch, not its own
    shard; the keys come back to their samples' places, identical on both ranks."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_shuffle_bn_worker, args=(2, port, shuffle_bn, str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(r0["queue"], r1["queue"])

    model, _ = _moco()
    model.train()
    views = torch.randn(2, 7, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def keys_when_batched_as(groups):
        """Both views' keys of all 7 samples, when the key encoder's BN batches are ``groups``."""
        keys = torch.empty(2, 7, 16)
        with torch.no_grad():
            for group in groups:
                k0, k1 = model._key_encoder(torch.cat([views[0][group], views[1][group]])).chunk(2)
                keys[0, group], keys[1, group] = k0, k1
        return keys.flatten(0, 1)  # the queue's order: every view-0 key, then every view-1 key

    own_shards = [torch.arange(0, 4), torch.arange(4, 7)]
    if shuffle_bn:
        assert len(r0["permutations"]) == 1 and torch.equal(r0["permutations"][0], r1["permutations"][0])
        permutation = r0["permutations"][0]
        assert sorted(permutation.tolist()) == list(range(7))
        drawn = [permutation[:4], permutation[4:]]
        torch.testing.assert_close(r0["queue"], keys_when_batched_as(drawn))
        # This seed draws other groups than the shards; BN statistics depend on the batch, so the keys differ.
        assert {frozenset(g.tolist()) for g in drawn} != {frozenset(g.tolist()) for g in own_shards}
        assert not torch.allclose(r0["queue"], keys_when_batched_as(own_shards), atol=1e-4)
    else:
        assert r0["permutations"] == []
        torch.testing.assert_close(r0["queue"], keys_when_batched_as(own_shards))
