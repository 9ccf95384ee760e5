// Package v1alpha1 holds the RoomSync API of the federation.roomsync.io group.
//
// +kubebuilder:object:generate=true
// +groupName=federation.roomsync.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the RoomSync API.
	GroupVersion = schema.GroupVersion{Group: "federation.roomsync.io", Version: "v1alpha1"}

	// SchemeBuilder registers the RoomSync types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
