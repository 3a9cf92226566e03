"""SeCo's objective, checked against direct computations that share no code with jobs/pretrain/seco.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from jobs.pretrain.seco import SeCo

BATCH, QUEUE, SIZE = 4, 8, 32


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SeCo("resnet18", subspaces=3, embedding_dim=16, queue_size=QUEUE, momentum=0.99, temperature=0.2)


def views():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, 3, SIZE, SIZE, generator=generator) for _ in range(4)]


def direct_loss(q, keys, queue, subspace, temperature):
    """Per-sample InfoNCE written out: positive first, then the negatives the paper defines."""
    total = 0.0
    for n in range(q.shape[0]):
        positive = float(q[n] @ keys[subspace][n])
        negatives = [float(q[n] @ queue[:, j]) for j in range(queue.shape[1])]
        if subspace > 0:  # the other two views' keys of every sample in the batch
            negatives += [
                float(q[n] @ keys[j][m]) for j in range(len(keys)) if j != subspace for m in range(q.shape[0])
            ]
        scores = [positive, *negatives]
        denominator = sum(math.exp(s / temperature) for s in scores)
        total += -math.log(math.exp(positive / temperature) / denominator)
    return total / q.shape[0]


def test_loss_on_a_hand_built_batch_equals_the_direct_computation(model):
    model.eval()  # BN in inference mode so both computations see the same features
    query, *keys = views()
    queue_before = model.queue.clone()
    with torch.no_grad():
        expected = []
        for subspace in range(3):
            q = F.normalize(model.heads_q[subspace](model.encoder_q(query)), dim=1)
            # After the momentum update the key encoder equals m * key + (1 - m) * query; both start equal.
            k = [F.normalize(model.heads_k[subspace](model.encoder_k(v)), dim=1) for v in keys]
            expected.append(direct_loss(q, k, queue_before[subspace], subspace, 0.2))
    total, per_subspace, _ = model(query, keys)
    assert [x.item() for x in torch.stack(per_subspace).detach()] == pytest.approx(expected, rel=1e-4)
    assert total.detach().item() == pytest.approx(sum(expected), rel=1e-4)


def test_subspace_logits_hold_the_positive_the_queue_then_the_other_views_keys(model):
    query_features = torch.randn(BATCH, 512)
    keys = [F.normalize(torch.randn(BATCH, 16), dim=1) for _ in range(3)]
    assert model.logits(model.query_embedding(query_features, 0), keys, 0).shape == (BATCH, 1 + QUEUE)
    for subspace in (1, 2):
        q = model.query_embedding(query_features, subspace)
        torch.testing.assert_close(q, F.normalize(model.heads_q[subspace](query_features), dim=1))
        logits = model.logits(q, keys, subspace)
        assert logits.shape == (BATCH, 1 + QUEUE + 2 * BATCH)
        torch.testing.assert_close(logits[:, 0], (q * keys[subspace]).sum(1) / 0.2)
        torch.testing.assert_close(logits[:, 1 : 1 + QUEUE], q @ model.queue[subspace] / 0.2)
        others = [j for j in range(3) if j != subspace]
        for block, j in enumerate(others):
            start = 1 + QUEUE + block * BATCH
            for m in range(BATCH):
                torch.testing.assert_close(logits[:, start + m], (q * keys[j][m]).sum(1) / 0.2)


def test_no_gradient_reaches_the_momentum_encoder_which_moves_only_by_ema(model):
    key_before = [p.clone() for p in model.encoder_k.parameters()]
    query, *keys = views()
    total, _, _ = model(query, keys)
    total.backward()
    assert all(
        p.grad is None and not p.requires_grad for p in [*model.encoder_k.parameters(), *model.heads_k.parameters()]
    )
    assert any(p.grad is not None for p in model.encoder_q.parameters())
    # Before any optimiser step the query weights equal the initial key weights: EMA leaves them unchanged.
    for before, after in zip(key_before, model.encoder_k.parameters()):
        torch.testing.assert_close(before, after)
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    model(query, keys)
    for before, after in zip(key_before, model.encoder_k.parameters()):  # m * k + (1 - m) * (k + 1)
        torch.testing.assert_close(after, before + (1 - model.momentum))


def test_each_queue_holds_the_last_k_positive_keys_of_its_own_subspace(model):
    model.eval()
    pushed = {0: [], 1: [], 2: []}
    for step in range(3):  # three batches of 4 into a queue of 8: the first batch is evicted
        query, *keys = [v + step for v in views()]
        model(query, keys)
        with torch.no_grad():  # the key encoder forward() used is the one it leaves behind
            for i in range(3):
                pushed[i].append(F.normalize(model.heads_k[i](model.encoder_k(keys[i])), dim=1))
    for i in range(3):
        ring = model.queue[i].T  # slots 0-3 hold step 2 (wrapped around), slots 4-7 step 1
        torch.testing.assert_close(ring[:4], pushed[i][2], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ring[4:], pushed[i][1], atol=1e-4, rtol=1e-4)
    assert int(model.queue_ptr) == (3 * BATCH) % QUEUE


def test_moco_is_one_subspace_with_one_key_and_no_extra_negatives():
    moco = SeCo("resnet18", subspaces=1, embedding_dim=16, queue_size=QUEUE)
    query, key, *_ = views()
    total, losses, health = moco(query, [key])
    assert len(losses) == 1 and health.shape == (1, 3) and torch.isfinite(total)
    with pytest.raises(ValueError, match="expected 1 key views, got 2"):
        moco(query, [key, key])


def test_health_is_the_query_embeddings_std_and_the_positive_and_queue_cosines(model):
    model.eval()
    query, *keys = views()
    queue_before = model.queue.clone()
    with torch.no_grad():
        q = [F.normalize(model.heads_q[i](model.encoder_q(query)), dim=1) for i in range(3)]
        k = [F.normalize(model.heads_k[i](model.encoder_k(keys[i])), dim=1) for i in range(3)]
    _, _, health = model(query, keys)
    for i in range(3):
        expected = [q[i].std(dim=0).mean(), (q[i] * k[i]).sum(1).mean(), (q[i] @ queue_before[i]).mean()]
        torch.testing.assert_close(health[i], torch.stack(expected), atol=1e-4, rtol=1e-4)


def test_a_model_forced_to_collapse_trips_the_alarm_after_enough_logs(model):
    from secoctl import collapse

    model.encoder_q.register_forward_hook(lambda module, inputs, features: torch.ones_like(features))  # collapsed
    query, *keys = views()
    history = []
    for step in range(collapse.ALARM_LOGS):
        _, _, health = model(query, keys)
        history.append({"step": step, **{f"embed_std_{i}": float(std) for i, std in enumerate(health[:, 0])}})
        assert max(history[-1][f"embed_std_{i}"] for i in range(3)) < 1e-6
        low = collapse.low_logs(history, dim=16)
        assert collapse.alarm({"embed_std": 0.0, "embed_std_low_logs": low}) == (
            "collapsing? embed_std=0" if low >= collapse.ALARM_LOGS else ""
        )
    assert low == collapse.ALARM_LOGS
    history.append({"step": 99, "embed_std_0": 1 / 4, "embed_std_1": 1 / 4, "embed_std_2": 1 / 4})
    assert collapse.low_logs(history, dim=16) == 0, "a healthy log ends the run of low ones"
