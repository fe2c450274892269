"""scidl.data.FileStream: per-rank files, per-worker batches, the same stream with any
number of workers, and bit-exact resume mid-epoch with workers."""

import numpy as np
import pytest
import torch

from scidl.data import DataError, FileDataset, FileStream, StreamLoader

h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install scidl[hdf5])")

SIZES = [6, 5, 7, 6, 4, 6]  # samples per file


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    start = 0
    for k, n in enumerate(SIZES):
        with h5py.File(root / f"f{k}.h5", "w") as f:
            ids = np.arange(start, start + n)
            f.create_dataset("x", data=np.repeat(ids[:, None], 3, 1).astype(np.float32),
                             chunks=(1, 3))
            f.create_dataset("y", data=ids)
        start += n
    return FileDataset(root, ["x", "y"])


def _ids(batches):
    return [b[1].tolist() for b in batches]


def _loader(stream, workers):
    kw = {"num_workers": workers}
    if workers:
        kw["multiprocessing_context"] = "fork"
    return StreamLoader(stream, **kw)


@pytest.mark.timeout(60)
def test_each_rank_streams_its_own_files_in_equal_batches(data):
    streams = [FileStream(data, 4, rank=r, world_size=2, seed=1, window=5) for r in range(2)]
    assert set(streams[0].files).isdisjoint(streams[1].files)
    assert sorted(streams[0].files + streams[1].files) == list(range(len(SIZES)))
    per_rank = []
    for s in streams:
        batches = _ids(StreamLoader(s))
        assert len(batches) == s.batches_per_epoch == min(
            sum(SIZES[f] for f in t.files) for t in streams) // 4
        flat = [i for b in batches for i in b]
        assert len(set(flat)) == len(flat)  # no sample twice in an epoch
        assert {data.locate(i)[0] for i in flat} <= set(s.files)
        for b in StreamLoader(s):  # x holds the sample id: the right bytes came back
            assert torch.equal(b[0], b[1][:, None].float().expand(-1, 3))
        per_rank.append(flat)
    s = streams[0]
    s.set_epoch(0)
    assert [i for b in _ids(StreamLoader(s)) for i in b] == per_rank[0]  # epoch 0 again
    s.set_epoch(5)
    assert [i for b in _ids(StreamLoader(s)) for i in b] != per_rank[0]  # reshuffled
    with pytest.raises(DataError, match="needs at least one"):
        FileStream(data, 4, rank=0, world_size=7)
    with pytest.raises(DataError, match="persistent_workers"):
        StreamLoader(s, num_workers=1, persistent_workers=True)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker")
def test_same_stream_with_any_number_of_workers_and_bit_exact_resume(data):
    def stream():
        return FileStream(data, 3, rank=1, world_size=2, seed=7, window=4)

    ref = stream()
    whole = [_ids(_loader(ref, 0)), _ids(_loader(ref, 0))]  # two epochs
    assert whole[0] != whole[1]
    for w in (2, 3):
        s = stream()
        assert [_ids(_loader(s, w)), _ids(_loader(s, w))] == whole
    # stop after k batches (mid-epoch, with 2 workers), save, resume in a new stream
    n = len(whole[0])
    for k in (1, n - 1, n + 2):
        s = stream()
        loader, got = _loader(s, 2), []
        while len(got) < k:
            for b in loader:
                got.append(b[1].tolist())
                if len(got) == k:
                    break
        state = s.state_dict()
        resumed = stream()
        resumed.load_state_dict(state)
        loader = _loader(resumed, 2)
        while len(got) < 2 * n:
            got += _ids(loader)
        assert got == whole[0] + whole[1], k
    bad = stream().state_dict() | {"seed": 8}
    with pytest.raises(DataError, match="other settings: seed 8"):
        stream().load_state_dict(bad)


@pytest.mark.timeout(120)
def test_training_resumed_from_the_stream_state_ends_with_the_same_weights(data):
    torch.set_num_threads(1)

    def train(steps, state=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        stream = FileStream(data, 2, rank=0, world_size=1, seed=3, window=6)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            stream.load_state_dict(state["data"])
        loader, done = _loader(stream, 2), state["steps"] if state else 0
        while done < steps:
            for x, y in loader:
                loss = ((model(x).squeeze(1) - y.float() / 30) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
                if done == steps:
                    break
        return model, {"model": model.state_dict(), "opt": opt.state_dict(),
                       "data": stream.state_dict(), "steps": done}

    full, _ = train(31)  # 17 batches an epoch: the resume is mid-epoch, then crosses one
    _, saved = train(12)
    resumed, _ = train(31, saved)
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
