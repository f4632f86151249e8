"""Networks: torchvision-layout ResNets and the DCT SMPL regressor."""
