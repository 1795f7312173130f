"""SpotTune (Guo et al., CVPR 2019): backbones, the two-path model, policy networks and Global-k."""
