"""The exploration noise's samples, log-density and KL, against torch.distributions."""
import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from policytrim_ros.envs.base import JOINT_NAMES
from policytrim_ros.policy.vla import VLAConfig
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.training.exploration import ChunkNoise, ExplorationConfig

H = 8


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = VLAModel(VLAConfig(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=32, num_layers=1,
                               num_heads=2, chunk_size=H, joint_names=JOINT_NAMES))
    model.set_normalization(np.zeros(7), np.ones(7), np.zeros(7), np.linspace(0.01, 0.2, 7))
    with torch.no_grad():
        model.log_std_param.copy_(torch.linspace(-2.5, -1.0, 7))
    return model


def masks():
    mask = torch.zeros(4, H, dtype=torch.bool)
    mask[0, :3] = mask[1, :] = True
    mask[2, :1] = True                                     # the fourth window executed nothing
    return mask


def covariance(noise, rows):
    """The K of ``rows`` (executed steps) of a chunk, built densely."""
    b = noise.shape(H, torch.float64)[rows]
    rho = noise.config.correlation
    return (1 - rho) * torch.eye(len(b), dtype=torch.float64) + rho * torch.outer(b, b)


def test_iid_noise_is_the_models_own_gaussian(model):
    noise = ChunkNoise()
    mean = torch.randn(4, H, 7) * 0.05
    drawn = noise.sample(model, mean, torch.Generator().manual_seed(3))
    assert torch.equal(drawn, model.sample(mean, torch.Generator().manual_seed(3)))   # the same stream
    assert torch.allclose(noise.log_prob(model, mean, drawn, masks()),
                          model.gaussian_log_prob(mean, drawn, masks()), rtol=1e-5)


@pytest.mark.parametrize('shape', ['ramp', 'constant'])
def test_correlated_log_density_matches_the_dense_multivariate_normal(model, shape):
    noise = ChunkNoise(ExplorationConfig(correlation=0.8, shape=shape))
    mean = torch.randn(4, H, 7) * 0.05
    actions = noise.sample(model, mean, torch.Generator().manual_seed(1))
    got = noise.log_prob(model, mean, actions, masks())
    std = (model.log_std().exp() * model.delta_std).double()               # raw units, per joint
    jacobian = torch.log(model.delta_std.double()).sum()                    # raw -> normalized delta space
    for i, row in enumerate(masks()):
        steps = row.nonzero().flatten()
        want = 0.0
        if len(steps):
            for a in range(7):
                dist = MultivariateNormal(mean[i, steps, a].double(), covariance(noise, steps) * std[a] ** 2)
                want += dist.log_prob(actions[i, steps, a].double()).item()
            want += len(steps) * jacobian.item()
        assert got[i].item() == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_correlated_kl_matches_the_dense_multivariate_normals(model):
    import copy
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.log_std_param.fill_(-1.5)
    noise = ChunkNoise(ExplorationConfig(correlation=0.6, shape='ramp'))
    mean, ref_mean = torch.randn(4, H, 7) * 0.05, torch.randn(4, H, 7) * 0.05
    got = noise.kl(model, mean, reference, ref_mean, masks())
    std, ref_std = model.log_std().exp().double(), reference.log_std().exp().double()
    for i, row in enumerate(masks()):
        steps = row.nonzero().flatten()
        want = 0.0
        for a in range(len(steps) and 7):
            k = covariance(noise, steps)
            p = MultivariateNormal((mean[i, steps, a] / model.delta_std[a]).double(), k * std[a] ** 2)
            q = MultivariateNormal((ref_mean[i, steps, a] / model.delta_std[a]).double(), k * ref_std[a] ** 2)
            want += kl_divergence(p, q).item()
        assert got[i].item() == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert noise.kl(model, mean, model, mean, masks()).abs().max().item() < 1e-5   # itself: 0


def test_iid_kl_matches_torch_normals(model):
    import copy
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.log_std_param.fill_(-1.5)
    mean, ref_mean = torch.randn(4, H, 7) * 0.05, torch.randn(4, H, 7) * 0.05
    got = ChunkNoise().kl(model, mean, reference, ref_mean, masks())
    want = kl_divergence(Normal(mean / model.delta_std, model.log_std().exp()),
                         Normal(ref_mean / model.delta_std, reference.log_std().exp()))
    want = (want.sum(-1) * masks()).sum(-1)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6) and got[3] == 0.0


@pytest.mark.parametrize('shape', ['ramp', 'constant'])
def test_samples_have_the_configured_covariance_along_the_chunk(model, shape):
    noise = ChunkNoise(ExplorationConfig(correlation=0.75, shape=shape))
    mean = torch.zeros(20000, H, 7)
    normalized = noise.sample(model, mean, torch.Generator().manual_seed(0)) / model.delta_std / model.log_std().exp()
    empirical = torch.cov(normalized[:, :, 2].T.double())
    assert torch.allclose(empirical, covariance(noise, torch.arange(H)), atol=0.04)


def test_the_ramp_grows_along_the_chunk_and_the_constant_does_not():
    ramp = ChunkNoise(ExplorationConfig(correlation=0.9, shape='ramp'))
    assert ramp.shape(H).tolist() == pytest.approx([(t + 1) / H for t in range(H)])
    assert ChunkNoise(ExplorationConfig(correlation=0.9, shape='constant')).shape(H).tolist() == [1.0] * H


def test_config_is_validated():
    with pytest.raises(ValueError, match=r'correlation \(1.0\) must be in \[0, 1\)'):
        ExplorationConfig(correlation=1.0)
    with pytest.raises(ValueError, match="shape \\('sine'\\) must be one of"):
        ExplorationConfig(shape='sine')
