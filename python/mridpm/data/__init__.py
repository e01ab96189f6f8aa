"""Data: fastMRI HDF5 and NIfTI files, and brain phantoms from the MNI152 maps shipped in nilearn."""

from mridpm.data.fastmri import FastMRIVolume, header_sizes, ismrmrd_header, read_fastmri, write_fastmri
from mridpm.data.nifti import read_nifti, write_nifti

__all__ = ["FastMRIVolume", "header_sizes", "ismrmrd_header", "read_fastmri", "read_nifti", "write_fastmri",
           "write_nifti"]
