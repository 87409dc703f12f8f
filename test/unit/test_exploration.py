"""The exploration noise's samples, log-density and KL, against torch.distributions."""
import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from policytrim_ros.policy.vla import VLAConfig
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.training.exploration import ChunkNoise, ExplorationConfig, waypoint_basis

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
    with pytest.raises(ValueError, match=r'waypoints \(-1\) must be >= 0'):
        ExplorationConfig(waypoints=-1)
    with pytest.raises(ValueError, match='exclude each other'):
        ExplorationConfig(waypoints=4, correlation=0.5)



def test_waypoint_basis_interpolates_from_zero_through_each_waypoint():
    basis = waypoint_basis(8, 4)                          # waypoints on steps 1, 3, 5, 7
    assert basis.tolist() == [[0.5, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 1, 0, 0],
                              [0, 0.5, 0.5, 0], [0, 0, 1, 0], [0, 0, 0.5, 0.5], [0, 0, 0, 1]]
    assert torch.equal(waypoint_basis(8, 8), torch.eye(8, dtype=torch.float64))   # k = H: iid noise
    uneven = waypoint_basis(32, 3)                        # waypoints on steps 10, 20, 31
    assert uneven[[10, 20, 31]].tolist() == torch.eye(3, dtype=torch.float64).tolist()
    assert torch.allclose(uneven[10:].sum(1), torch.ones(22, dtype=torch.float64))  # a partition of unity
    with pytest.raises(ValueError, match=r'waypoints \(9\) must be in \[1, chunk_size = 8\]'):
        waypoint_basis(8, 9)


def waypoint_noise(k):
    return ChunkNoise(ExplorationConfig(waypoints=k))


def test_waypoint_samples_are_the_interpolated_waypoint_draws(model):
    noise = waypoint_noise(4)
    mean = torch.randn(3, H, 7) * 0.05
    drawn = noise.sample(model, mean, torch.Generator().manual_seed(5))
    z = torch.randn((3, 4, 7), generator=torch.Generator().manual_seed(5))
    want = mean + torch.einsum('hk,bka->bha', waypoint_basis(H, 4, torch.float32), z) \
        * model.log_std().exp() * model.delta_std
    assert torch.allclose(drawn, want, atol=1e-6)
    assert torch.allclose(drawn[:, 0] - mean[:, 0], (drawn[:, 1] - mean[:, 1]) / 2, atol=1e-7)   # half of waypoint 1


def test_waypoint_log_density_is_the_latent_gaussians(model):
    noise = waypoint_noise(4)
    mean = torch.randn(4, H, 7) * 0.05
    generator = torch.Generator().manual_seed(2)
    actions = noise.sample(model, mean, generator)
    z = torch.randn((4, 4, 7), generator=torch.Generator().manual_seed(2)).double()
    log_std = model.log_std().double()
    full = torch.ones(4, H, dtype=torch.bool)
    want = (Normal(0.0, 1.0).log_prob(z) - log_std).sum((1, 2))           # k draws per dimension
    assert torch.allclose(noise.log_prob(model, mean, actions, full).double(), want, rtol=1e-5)
    # a prefix of 3 steps sees waypoints 0 and 1 (rank 2) and scores their least-squares draws
    prefix = torch.zeros(4, H, dtype=torch.bool)
    prefix[:, :3] = True
    basis = waypoint_basis(H, 4)[:3, :2]
    residual = (-model.normalized_error(mean, actions) / model.log_std().exp()).double()[:, :3]
    z_hat = torch.einsum('kh,bha->bka', torch.linalg.pinv(basis), residual)
    want = (Normal(0.0, 1.0).log_prob(z_hat) - log_std).sum((1, 2))
    assert torch.allclose(noise.log_prob(model, mean, actions, prefix).double(), want, rtol=1e-5)
    assert noise.dims(prefix).tolist() == [2.0] * 4 and noise.dims(full).tolist() == [4.0] * 4
    none = torch.zeros(4, H, dtype=torch.bool)
    assert noise.log_prob(model, mean, actions, none).abs().max().item() == 0.0


def test_waypoints_at_every_step_are_the_iid_density_and_kl(model):
    import copy
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.log_std_param.fill_(-1.5)
    mean, ref_mean = torch.randn(4, H, 7) * 0.05, torch.randn(4, H, 7) * 0.05
    actions = ChunkNoise().sample(model, mean, torch.Generator().manual_seed(4))
    prefixes = torch.arange(H)[None] < torch.tensor([3, 8, 1, 0])[:, None]
    iid, every_step = ChunkNoise(), waypoint_noise(H)
    assert torch.allclose(every_step.log_prob(model, mean, actions, prefixes),
                          iid.log_prob(model, mean, actions, prefixes), rtol=1e-5)
    assert torch.allclose(every_step.kl(model, mean, reference, ref_mean, prefixes),
                          iid.kl(model, mean, reference, ref_mean, prefixes), rtol=1e-4, atol=1e-6)


def test_waypoint_kl_is_the_latent_gaussians(model):
    import copy
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.log_std_param.fill_(-1.5)
    noise = waypoint_noise(4)
    mean, ref_mean = torch.randn(2, H, 7) * 0.05, torch.randn(2, H, 7) * 0.05
    full = torch.ones(2, H, dtype=torch.bool)
    got = noise.kl(model, mean, reference, ref_mean, full)
    pinv = torch.linalg.pinv(waypoint_basis(H, 4))
    std, ref_std = model.log_std().exp().double(), reference.log_std().exp().double()
    for i in range(2):
        want = 0.0
        for a in range(7):      # the latent means least-squares fit each mean's normalized chunk
            p = Normal(pinv @ (mean[i, :, a] / model.delta_std[a]).double(), std[a])
            q = Normal(pinv @ (ref_mean[i, :, a] / model.delta_std[a]).double(), ref_std[a])
            want += kl_divergence(p, q).sum().item()
        assert got[i].item() == pytest.approx(want, rel=1e-4)


def test_waypoint_noise_scores_executed_prefixes_only(model):
    gap = torch.zeros(1, H, dtype=torch.bool)
    gap[0, [0, 2]] = True
    mean = torch.zeros(1, H, 7)
    with pytest.raises(ValueError, match='every mask row must be True on its first n steps'):
        waypoint_noise(4).log_prob(model, mean, mean, gap)
